//go:build linux

package verify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// route is the kernel's answer to "how would a packet to this address
// leave": ip route get, over rtnetlink.
type route struct {
	Type    uint8      // unix.RTN_UNICAST for a usable route
	OIF     int        // outgoing interface index
	Gateway netip.Addr // next hop, when not on-link
}

// String names the route the way an operator reads it.
func (r route) String() string {
	dev := fmt.Sprintf("ifindex %d", r.OIF)
	if ifc, err := net.InterfaceByIndex(r.OIF); err == nil {
		dev = ifc.Name
	}
	if r.Gateway.IsValid() {
		return "via " + r.Gateway.String() + " dev " + dev
	}
	return "dev " + dev
}

// routeTo asks the kernel of the calling thread's network namespace for the
// route to addr. Without one it returns the kernel's errno (ENETUNREACH,
// EHOSTUNREACH, EACCES for a prohibit route …).
func routeTo(addr netip.Addr) (route, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return route{}, fmt.Errorf("route to %s: %w", addr, err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return route{}, fmt.Errorf("route to %s: %w", addr, err)
	}
	if err := unix.Sendto(fd, routeRequest(addr), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return route{}, fmt.Errorf("route to %s: %w", addr, err)
	}
	buf := make([]byte, 1<<16)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return route{}, fmt.Errorf("route to %s: %w", addr, err)
	}
	return parseRouteReply(buf[:n])
}

// routeRequest builds RTM_GETROUTE for one destination address.
func routeRequest(addr netip.Addr) []byte {
	raw := addr.AsSlice()
	family := byte(unix.AF_INET6)
	if addr.Is4() {
		family = unix.AF_INET
	}
	attrLen := unix.SizeofRtAttr + len(raw)
	total := unix.SizeofNlMsghdr + unix.SizeofRtMsg + (attrLen+3)&^3
	b := make([]byte, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint16(b[4:], unix.RTM_GETROUTE)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(b[8:], 1) // sequence
	rt := b[unix.SizeofNlMsghdr:]
	rt[0] = family             // rtm_family
	rt[1] = byte(len(raw) * 8) // rtm_dst_len
	attr := rt[unix.SizeofRtMsg:]
	ne.PutUint16(attr[0:], uint16(attrLen))
	ne.PutUint16(attr[2:], unix.RTA_DST)
	copy(attr[unix.SizeofRtAttr:], raw)
	return b
}

// parseRouteReply reads the kernel's answer to routeRequest: an
// RTM_NEWROUTE, or an error message carrying an errno.
func parseRouteReply(b []byte) (route, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return route{}, fmt.Errorf("route reply: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return route{}, errors.New("route reply: short error message")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e < 0 {
				return route{}, syscall.Errno(-e)
			}
		case unix.RTM_NEWROUTE:
			if len(m.Data) < unix.SizeofRtMsg {
				return route{}, errors.New("route reply: short route message")
			}
			r := route{Type: m.Data[7]} // rtm_type
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return route{}, fmt.Errorf("route reply: %w", err)
			}
			for _, a := range attrs {
				switch a.Attr.Type {
				case unix.RTA_OIF:
					if len(a.Value) >= 4 {
						r.OIF = int(binary.NativeEndian.Uint32(a.Value))
					}
				case unix.RTA_GATEWAY:
					if ip, ok := netip.AddrFromSlice(a.Value); ok {
						r.Gateway = ip.Unmap()
					}
				}
			}
			return r, nil
		}
	}
	return route{}, errors.New("route reply: no route message")
}
