//go:build !linux

package backup

const syscallNoFollow = 0
