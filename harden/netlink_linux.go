//go:build linux

package harden

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel is the real Netfilter: nftables over netlink in the network
// namespace of the connection it was given.
type Kernel struct {
	conn *nftables.Conn
}

var _ Netfilter = (*Kernel)(nil)

// NewKernel acts through c; pass nftables.New(nftables.WithNetNSFd(fd)) to
// act on another network namespace, nftables.New() for the current one.
func NewKernel(c *nftables.Conn) *Kernel { return &Kernel{conn: c} }

// Open returns the Kernel of the network namespace this process runs in.
func Open() (*Kernel, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return NewKernel(c), nil
}

// OpenNetNS returns the Kernel of the named network namespace (as "ip netns
// add" made it, under /var/run/netns) and a func that closes it.
func OpenNetNS(name string) (*Kernel, func(), error) {
	f, err := os.Open(filepath.Join("/var/run/netns", name))
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace %s: %w", name, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open nftables in network namespace %s: %w", name, err)
	}
	return NewKernel(c), func() { f.Close() }, nil
}

var ourTable = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

var hooks = map[string]*nftables.ChainHook{
	"prerouting":  nftables.ChainHookPrerouting,
	"input":       nftables.ChainHookInput,
	"forward":     nftables.ChainHookForward,
	"output":      nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
	"ingress":     nftables.ChainHookIngress,
}

func hookName(h *nftables.ChainHook) string {
	if h == nil {
		return ""
	}
	for n, v := range hooks {
		if *v == *h {
			return n
		}
	}
	return fmt.Sprintf("hook%d", *h)
}

// Live reads our table, bracketed by two generation reads so that what it
// returns is one consistent version of the ruleset.
func (k *Kernel) Live() (State, error) {
	for try := 0; try < 5; try++ {
		gen, err := k.generation()
		if err != nil {
			return State{}, err
		}
		t, err := k.read()
		if err != nil {
			return State{}, err
		}
		again, err := k.generation()
		if err != nil {
			return State{}, err
		}
		if again == gen {
			return State{Gen: gen, Table: t}, nil
		}
	}
	return State{}, fmt.Errorf("read table inet %s: %w", TableName, ErrConcurrentChange)
}

func (k *Kernel) read() (*Table, error) {
	chains, err := k.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	tables, err := k.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == TableName
	}
	if !found {
		return nil, nil
	}
	t := &Table{}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != TableName {
			continue
		}
		tc := TableChain{Name: c.Name, Hook: hookName(c.Hooknum), Type: string(c.Type)}
		if c.Priority != nil {
			tc.Priority = int32(*c.Priority)
		}
		if c.Policy != nil {
			tc.Policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*c.Policy]
		}
		rules, err := k.conn.GetRules(ourTable, &nftables.Chain{Name: c.Name, Table: ourTable})
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		for _, r := range rules {
			c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			tc.Rules = append(tc.Rules, TableRule{Comment: c, Key: exprKey(c, r.Exprs), src: r.Exprs})
		}
		t.Chains = append(t.Chains, tc)
	}
	return t, nil
}

// EgressDrops reads how many packets the output chain's final counted drop
// (the rule commented EgressDenied) has refused since the table was loaded.
// It returns ErrNoCounter when the table or that rule is missing.
func (k *Kernel) EgressDrops() (uint64, error) { return k.Drops(EgressDenied) }

// Drops reads the counter of the output chain's counted drop with the given
// comment: EgressDenied, or ProbeComment of a probe address. It returns
// ErrNoCounter when the table or that rule is missing.
func (k *Kernel) Drops(comment string) (uint64, error) {
	rules, err := k.conn.GetRules(ourTable, &nftables.Chain{Name: "output", Table: ourTable})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, ErrNoCounter
		}
		return 0, fmt.Errorf("read the egress drop counter: %w", err)
	}
	for _, r := range rules {
		if c, _ := userdata.GetString(r.UserData, userdata.TypeComment); c != comment {
			continue
		}
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				return ctr.Packets, nil
			}
		}
	}
	return 0, ErrNoCounter
}

// Replace makes our table equal to want (nil: absent) in one batch that the
// kernel applies only if the ruleset is still at generation gen. Nothing
// outside table inet qwen_appliance is named in the batch.
func (k *Kernel) Replace(gen uint32, want *Table) error {
	msgs, err := k.batch(want)
	if err != nil {
		return err
	}
	if err := k.send(gen, msgs); err != nil {
		if errors.Is(err, unix.ERESTART) {
			return fmt.Errorf("replace table inet %s: %w", TableName, ErrConcurrentChange)
		}
		return fmt.Errorf("replace table inet %s (the kernel rolled the whole batch back): %w", TableName, err)
	}
	return nil
}

// errCaptured stops a capturing Flush after the batch has been serialized.
var errCaptured = errors.New("batch captured")

// batch serializes the messages with google/nftables without sending them:
// add our table (so the delete cannot fail), delete it, and recreate it.
func (k *Kernel) batch(want *Table) ([]netlink.Message, error) {
	var captured []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		for _, m := range req {
			m.Data = append([]byte(nil), m.Data...)
			captured = append(captured, m)
		}
		return nil, errCaptured
	}))
	if err != nil {
		return nil, err
	}
	c.AddTable(ourTable)
	c.DelTable(ourTable)
	if want != nil {
		c.AddTable(ourTable)
		for _, tc := range want.Chains {
			ch := &nftables.Chain{Name: tc.Name, Table: ourTable}
			if tc.Hook != "" {
				h, ok := hooks[tc.Hook]
				if !ok {
					return nil, fmt.Errorf("chain %s: unknown hook %q", tc.Name, tc.Hook)
				}
				ch.Hooknum = h
				ch.Type = nftables.ChainType(tc.Type)
				ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(tc.Priority))
				pol := nftables.ChainPolicyAccept
				if tc.Policy == "drop" {
					pol = nftables.ChainPolicyDrop
				}
				ch.Policy = &pol
			}
			c.AddChain(ch)
			for _, r := range tc.Rules {
				var exprs []expr.Any
				switch src := r.src.(type) {
				case Rule:
					exprs = src.exprs()
				case []expr.Any:
					exprs = src
				default:
					return nil, fmt.Errorf("chain %s: rule %q has no expressions", tc.Name, r.Comment)
				}
				var ud []byte
				if r.Comment != "" {
					ud = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
				}
				c.AddRule(&nftables.Rule{Table: ourTable, Chain: ch, Exprs: exprs, UserData: ud})
			}
		}
	}
	if err := c.Flush(); err != nil && !errors.Is(err, errCaptured) {
		return nil, fmt.Errorf("serialize batch: %w", err)
	}
	if len(captured) < 2 {
		return nil, fmt.Errorf("serialize batch: got %d messages", len(captured))
	}
	return captured, nil
}

// send transmits a captured batch with the generation id in its begin
// message (NFNL_BATCH_GENID): the kernel refuses the whole batch with
// ERESTART if another process committed in between.
func (k *Kernel) send(gen uint32, msgs []netlink.Message) error {
	begin := &msgs[0]
	if begin.Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
		return fmt.Errorf("serialize batch: first message is not a batch begin")
	}
	attr, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFNL_BATCH_GENID, Data: binary.BigEndian.AppendUint32(nil, gen)}})
	if err != nil {
		return err
	}
	begin.Data = append(begin.Data[:4:4], attr...)
	acks := 0
	for i := range msgs {
		msgs[i].Header.Length, msgs[i].Header.Sequence, msgs[i].Header.PID = 0, 0, 0
		if msgs[i].Header.Flags&netlink.Acknowledge != 0 {
			acks++
		}
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.conn.NetNS})
	if err != nil {
		return fmt.Errorf("dial netlink: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := conn.SendMessages(msgs); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	for acks > 0 {
		replies, err := conn.Receive()
		if err != nil {
			var op *netlink.OpError
			if errors.As(err, &op) {
				return op.Err
			}
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				acks--
			}
		}
	}
	return nil
}

// generation asks the kernel for the ruleset's generation id, which every
// committed batch increments.
func (k *Kernel) generation() (uint32, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.conn.NetNS})
	if err != nil {
		return 0, fmt.Errorf("dial netlink: %w", err)
	}
	defer conn.Close()
	replies, err := conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		if errors.Is(err, syscall.EPERM) {
			return 0, fmt.Errorf("read nftables generation: %w (root or CAP_NET_ADMIN needed)", err)
		}
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("read nftables generation: no generation id in the reply")
}
