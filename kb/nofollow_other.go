//go:build !unix

package kb

const syscallNoFollow = 0
