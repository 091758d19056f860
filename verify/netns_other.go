//go:build !linux

package verify

import "fmt"

// inNetNS runs fn in the current network namespace when name is empty;
// network namespaces exist only on Linux, so any other name is refused.
func inNetNS(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	return fmt.Errorf("network namespace %q: only available on Linux", name)
}
