//go:build linux

package harden

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func init() { ruleKey = func(r Rule) string { return exprKey(r.Comment, r.exprs()) } }

// exprs compiles the rule the way nft compiles its Text; a test loads the
// text with nft and compares.
func (r Rule) exprs() []expr.Any {
	var out []expr.Any
	for _, m := range r.matches {
		out = append(out, m.exprs()...)
	}
	if r.drop {
		return append(out, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	if r.reject {
		return append(out, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST, Code: 0})
	}
	return append(out, &expr.Verdict{Kind: expr.VerdictAccept})
}

// exprKey identifies a rule by its comment and marshalled expressions, so
// rules read back from the kernel compare equal to the ones we built.
func exprKey(comment string, es []expr.Any) string {
	var b strings.Builder
	b.WriteString(comment)
	for _, e := range es {
		if _, ok := e.(*expr.Counter); ok {
			e = &expr.Counter{} // what it counted so far is not part of the rule
		}
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), e)
		if err != nil {
			fmt.Fprintf(&b, "|%T!%v", e, err)
			continue
		}
		b.WriteString("|" + hex.EncodeToString(data))
	}
	return b.String()
}

func (m match) exprs() []expr.Any {
	switch m.kind {
	case matchIfname:
		key := expr.MetaKeyIIFNAME
		if m.out {
			key = expr.MetaKeyOIFNAME
		}
		data := make([]byte, unix.IFNAMSIZ)
		copy(data, m.name)
		return []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
		}
	case matchEstablished:
		return ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	case matchCtNew:
		return ctState(expr.CtStateBitNEW)
	case matchSkuid:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.uid)},
		}
	case matchPortRange:
		return append(l4proto(unix.IPPROTO_TCP),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binary.BigEndian.AppendUint16(nil, m.port)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binary.BigEndian.AppendUint16(nil, m.last)})
	case matchICMPv6:
		return append(append(nfproto(false), l4proto(unix.IPPROTO_ICMPV6)...),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.icmp}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{255}},
		)
	case matchAddr:
		return addrExprs(m.prefix, m.dst)
	case matchPort:
		num := byte(unix.IPPROTO_TCP)
		if m.proto == "udp" {
			num = unix.IPPROTO_UDP
		}
		return append(l4proto(num),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, m.port)})
	}
	panic(fmt.Sprintf("harden: unknown match kind %d", m.kind))
}

// ctState matches packets whose conntrack state has any of bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func nfproto(v4 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV6)
	if v4 {
		proto = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// addrExprs matches a prefix the way nft compiles it: whole bytes are
// compared directly, a partial byte needs a mask over the full address,
// and /0 only checks the address family.
func addrExprs(p netip.Prefix, dst bool) []expr.Any {
	v4 := p.Addr().Is4()
	offset := uint32(8) // IPv6 source; destination at 24
	if v4 {
		offset = 12 // IPv4 source; destination at 16
	}
	if dst {
		offset += uint32(p.Addr().BitLen() / 8)
	}
	exprs := nfproto(v4)
	bits := p.Bits()
	if bits == 0 {
		return exprs
	}
	raw := p.Addr().AsSlice()
	if bits%8 == 0 {
		n := uint32(bits / 8)
		return append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: raw[:n]})
	}
	mask := make([]byte, len(raw))
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(raw))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(raw)), Mask: mask, Xor: make([]byte, len(raw))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: raw})
}
