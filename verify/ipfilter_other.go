//go:build !linux

package verify

import "errors"

func ipFilterPrograms(int) (int, int, error) {
	return 0, 0, errors.New("cgroup IP filters exist on Linux only")
}
