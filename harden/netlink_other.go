//go:build !linux

package harden

// Kernel stands in for the nftables seam where there is none; every method
// returns ErrUnsupported.
type Kernel struct{}

var _ Netfilter = (*Kernel)(nil)

// Open returns ErrUnsupported: nftables is Linux only.
func Open() (*Kernel, error) { return nil, ErrUnsupported }

// OpenNetNS returns ErrUnsupported: nftables is Linux only.
func OpenNetNS(string) (*Kernel, func(), error) { return nil, nil, ErrUnsupported }

// Live returns ErrUnsupported.
func (*Kernel) Live() (State, error) { return State{}, ErrUnsupported }

// Replace returns ErrUnsupported.
func (*Kernel) Replace(uint32, *Table) error { return ErrUnsupported }

// EgressDrops returns ErrUnsupported.
func (*Kernel) EgressDrops() (uint64, error) { return 0, ErrUnsupported }

// Drops returns ErrUnsupported.
func (*Kernel) Drops(string) (uint64, error) { return 0, ErrUnsupported }
