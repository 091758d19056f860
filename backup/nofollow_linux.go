//go:build linux

package backup

import "syscall"

const syscallNoFollow = syscall.O_NOFOLLOW
