// Package sdtimer renders a systemd service and timer pair that runs one
// qwen-appliance command on a calendar (scheduled backups, scheduled
// verify). It must never render an ExecStart whose arguments systemd would
// split or expand differently from how they read.
package sdtimer

import (
	"fmt"
	"strings"
)

// Options describe one scheduled command.
type Options struct {
	Writer      string   // the command that writes the units, named in their header
	Description string   // of the service; the timer adds the calendar
	Args        []string // the command line; Args[0] is an absolute program path
	OnCalendar  string   // a systemd calendar expression
	Delay       string   // RandomizedDelaySec
	After       string   // a unit the service orders itself after ("" none)
	Background  bool     // idle I/O class and Nice=10: never slow down serving
}

// Render returns the service and timer unit files.
func Render(o Options) (service, timer string, err error) {
	if len(o.Args) == 0 || !strings.HasPrefix(o.Args[0], "/") {
		return "", "", fmt.Errorf("schedule: the program must be an absolute path, not %q", strings.Join(o.Args, " "))
	}
	if o.OnCalendar == "" || strings.ContainsAny(o.OnCalendar, "\n\"'\\") {
		return "", "", fmt.Errorf("schedule: calendar %q is not a systemd calendar expression", o.OnCalendar)
	}
	for _, a := range o.Args {
		if strings.ContainsAny(a, " \t\n\"'\\%$;") {
			return "", "", fmt.Errorf("schedule: argument %q needs quoting; choose a simpler path", a)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by %s.\n[Unit]\nDescription=%s\nDocumentation=man:qwen-appliance(1)\n", o.Writer, o.Description)
	if o.After != "" {
		fmt.Fprintf(&b, "After=%s\n", o.After)
	}
	fmt.Fprintf(&b, "\n[Service]\nType=oneshot\nExecStart=%s\n", strings.Join(o.Args, " "))
	if o.Background {
		b.WriteString("Nice=10\nIOSchedulingClass=idle\n")
	}
	b.WriteString("UMask=0077\nPrivateTmp=yes\nNoNewPrivileges=yes\n")
	service = b.String()
	timer = fmt.Sprintf(`# Written by %s.
[Unit]
Description=%s, %s

[Timer]
OnCalendar=%s
Persistent=yes
RandomizedDelaySec=%s

[Install]
WantedBy=timers.target
`, o.Writer, o.Description, o.OnCalendar, o.OnCalendar, o.Delay)
	return service, timer, nil
}
