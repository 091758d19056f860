//go:build !linux

package host

// freeBytes is not implemented outside Linux, where qwen-appliance installs.
func freeBytes(string) (int64, error) { return 0, ErrUnsupported }
