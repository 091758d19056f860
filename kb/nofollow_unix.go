//go:build unix

package kb

import "syscall"

const syscallNoFollow = syscall.O_NOFOLLOW
