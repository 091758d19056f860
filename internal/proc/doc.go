// Package proc reads Linux process facts from /proc (the stat line, the boot
// id) and signals a process only after proving it is the one recorded when it
// was started: a PID alone names whatever process holds that number now, which
// after a crash, a reboot or in another PID namespace is someone else's. It
// must never signal a process whose identity does not match.
package proc
