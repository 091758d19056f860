//go:build linux

package verify

import (
	"net/netip"
	"syscall"
	"testing"
)

// TestRouteToLoopback asks the real kernel: 127.0.0.1 has a (local) route,
// an address of the documentation range has none in a namespace of our own.
func TestRouteToLoopback(t *testing.T) {
	r, err := routeTo(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Type == rtnUnicast || r.OIF == 0 {
		t.Errorf("127.0.0.1: %+v, want a local route on lo", r)
	}
	host, peer := netPair(t)
	must(t, inNetNS(host, func() error {
		if r, err := routeTo(netip.MustParseAddr(peer)); err != nil || r.Type != rtnUnicast {
			t.Errorf("route to the peer %s: %+v, %v", peer, r, err)
		}
		if _, err := routeTo(netip.MustParseAddr("198.51.100.7")); err != syscall.ENETUNREACH {
			t.Errorf("route to an unrouted address: %v, want ENETUNREACH", err)
		}
		return nil
	}))
}

func FuzzParseRouteReply(f *testing.F) {
	f.Add(routeRequest(netip.MustParseAddr("10.0.0.1")))
	f.Add([]byte{20, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x9b, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseRouteReply(b) // must not panic on any reply
	})
}
