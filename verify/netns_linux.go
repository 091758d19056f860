//go:build linux

package verify

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetNS runs fn on a thread inside the named network namespace (the current
// one when name is empty). fn must not start goroutines that need the
// namespace; sockets it creates stay in the namespace.
func inNetNS(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	defer netns.Set(orig)
	return fn()
}
