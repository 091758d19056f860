//go:build !linux

package verify

import (
	"errors"
	"net/netip"
)

// route is the kernel's route to an address; only Linux reports one.
type route struct {
	Type uint8
}

func (route) String() string { return "" }

// routeTo returns errors.ErrUnsupported outside Linux.
func routeTo(netip.Addr) (route, error) { return route{}, errors.ErrUnsupported }
