package fscryptmeta

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The messages below mirror metadata/metadata.proto of fscrypt; field
// numbers are that file's. Only what a v2 policy with raw-key or passphrase
// protectors needs is kept; other fields are skipped when read.

// Source is how a protector's secret is obtained (SourceType).
type Source int64

// Sources.
const (
	SourcePAMPassphrase    Source = 1
	SourceCustomPassphrase Source = 2
	SourceRawKey           Source = 3
)

// Encryption modes (EncryptionOptions.Mode), the kernel's FSCRYPT_MODE_*.
const (
	ModeAES256XTS = 1
	ModeAES256CTS = 4
)

// Lengths fscrypt checks (metadata/constants.go).
const (
	ivLen                  = 16
	hmacLen                = 32
	saltLen                = 16
	InternalKeyLen         = 32 // protector keys and raw keys
	policyKeyLen           = 64 // FSCRYPT_MAX_KEY_SIZE
	protectorDescriptorLen = 16 // hex digits
	policyDescriptorLenV2  = 32 // hex digits: the kernel's key identifier
)

// HashingCosts are the argon2id costs of a passphrase protector.
type HashingCosts struct {
	Time        int64 // field 2
	Memory      int64 // field 3, KiB
	Parallelism int64 // field 4
}

// WrappedKey is a key encrypted with AES-256-CTR and authenticated with
// HMAC-SHA256 (WrappedKeyData).
type WrappedKey struct {
	IV           []byte // field 1
	EncryptedKey []byte // field 2
	HMAC         []byte // field 3
}

// Protector is one way to unlock policies (ProtectorData).
type Protector struct {
	Descriptor string        // field 1
	Source     Source        // field 2
	Name       string        // field 3
	Costs      *HashingCosts // field 4
	Salt       []byte        // field 5
	UID        int64         // field 6
	WrappedKey WrappedKey    // field 7
}

// Options is an encryption policy's settings (EncryptionOptions).
type Options struct {
	Padding       int64 // field 1
	Contents      int64 // field 2
	Filenames     int64 // field 3
	PolicyVersion int64 // field 4
}

// PolicyKey is the policy key wrapped by one protector (WrappedPolicyKey).
type PolicyKey struct {
	ProtectorDescriptor string     // field 1
	WrappedKey          WrappedKey // field 2
}

// Policy is an encrypted directory's policy and its wrapped keys
// (PolicyData).
type Policy struct {
	KeyDescriptor string      // field 1
	Options       Options     // field 2
	WrappedKeys   []PolicyKey // field 3, repeated
}

// Wire types of the protobuf encoding.
const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

// encoder appends fields in field-number order and leaves out zero values,
// as proto3 does, so the bytes equal what fscrypt itself writes.
type encoder []byte

func (e *encoder) tag(num, typ int) { *e = binary.AppendUvarint(*e, uint64(num)<<3|uint64(typ)) }

func (e *encoder) varint(num int, v int64) {
	if v != 0 {
		e.tag(num, wireVarint)
		*e = binary.AppendUvarint(*e, uint64(v))
	}
}

func (e *encoder) bytes(num int, b []byte) {
	if len(b) > 0 {
		e.tag(num, wireLen)
		*e = binary.AppendUvarint(*e, uint64(len(b)))
		*e = append(*e, b...)
	}
}

// message writes an embedded message; present says whether to write it
// when it is empty (a set but empty message still has a tag).
func (e *encoder) message(num int, m []byte, present bool) {
	if present || len(m) > 0 {
		e.tag(num, wireLen)
		*e = binary.AppendUvarint(*e, uint64(len(m)))
		*e = append(*e, m...)
	}
}

func (w *WrappedKey) marshal() []byte {
	var e encoder
	e.bytes(1, w.IV)
	e.bytes(2, w.EncryptedKey)
	e.bytes(3, w.HMAC)
	return e
}

func (c *HashingCosts) marshal() []byte {
	var e encoder
	e.varint(2, c.Time)
	e.varint(3, c.Memory)
	e.varint(4, c.Parallelism)
	return e
}

func (o *Options) marshal() []byte {
	var e encoder
	e.varint(1, o.Padding)
	e.varint(2, o.Contents)
	e.varint(3, o.Filenames)
	e.varint(4, o.PolicyVersion)
	return e
}

// marshal encodes the protector as fscrypt stores it.
func (p *Protector) marshal() []byte {
	var e encoder
	e.bytes(1, []byte(p.Descriptor))
	e.varint(2, int64(p.Source))
	e.bytes(3, []byte(p.Name))
	if p.Costs != nil {
		e.message(4, p.Costs.marshal(), true)
	}
	e.bytes(5, p.Salt)
	e.varint(6, p.UID)
	e.message(7, p.WrappedKey.marshal(), true)
	return e
}

// marshal encodes the policy as fscrypt stores it.
func (p *Policy) marshal() []byte {
	var e encoder
	e.bytes(1, []byte(p.KeyDescriptor))
	e.message(2, p.Options.marshal(), true)
	for i := range p.WrappedKeys {
		k := &p.WrappedKeys[i]
		var m encoder
		m.bytes(1, []byte(k.ProtectorDescriptor))
		m.message(2, k.WrappedKey.marshal(), true)
		e.message(3, m, true)
	}
	return e
}

// errTruncated is any encoding that ends inside a field.
var errTruncated = errors.New("truncated field")

// decode calls field for each field of one message. For wireVarint v holds
// the value; for wireLen b holds the bytes. Unknown fields are the caller's
// to ignore; groups are refused, as fscrypt's messages have none.
func decode(data []byte, field func(num, typ int, v uint64, b []byte) error) error {
	for len(data) > 0 {
		key, n := binary.Uvarint(data)
		if n <= 0 {
			return errTruncated
		}
		data = data[n:]
		num, typ := key>>3, int(key&7)
		if num == 0 || num > 1<<29-1 {
			return fmt.Errorf("field number %d is invalid", num)
		}
		var v uint64
		var b []byte
		switch typ {
		case wireVarint:
			if v, n = binary.Uvarint(data); n <= 0 {
				return errTruncated
			}
			data = data[n:]
		case wireI64, wireI32:
			size := 8
			if typ == wireI32 {
				size = 4
			}
			if len(data) < size {
				return errTruncated
			}
			data = data[size:]
		case wireLen:
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return errTruncated
			}
			b, data = data[n:n+int(l)], data[n+int(l):]
		default:
			return fmt.Errorf("field %d has wire type %d, which fscrypt's metadata never uses", num, typ)
		}
		if err := field(int(num), typ, v, b); err != nil {
			return fmt.Errorf("field %d: %w", num, err)
		}
	}
	return nil
}

// want checks a known field's wire type.
func want(typ, expected int) error {
	if typ != expected {
		return fmt.Errorf("wire type %d, want %d", typ, expected)
	}
	return nil
}

func (w *WrappedKey) unmarshal(data []byte) error {
	return decode(data, func(num, typ int, _ uint64, b []byte) error {
		var dst *[]byte
		switch num {
		case 1:
			dst = &w.IV
		case 2:
			dst = &w.EncryptedKey
		case 3:
			dst = &w.HMAC
		default:
			return nil
		}
		if err := want(typ, wireLen); err != nil {
			return err
		}
		*dst = append([]byte(nil), b...)
		return nil
	})
}

// varints decodes a message whose known fields are all int64 varints.
func varints(data []byte, fields map[int]*int64) error {
	return decode(data, func(num, typ int, v uint64, _ []byte) error {
		dst, ok := fields[num]
		if !ok {
			return nil
		}
		if err := want(typ, wireVarint); err != nil {
			return err
		}
		*dst = int64(v)
		return nil
	})
}

func (o *Options) unmarshal(data []byte) error {
	return varints(data, map[int]*int64{1: &o.Padding, 2: &o.Contents, 3: &o.Filenames, 4: &o.PolicyVersion})
}

func (c *HashingCosts) unmarshal(data []byte) error {
	return varints(data, map[int]*int64{2: &c.Time, 3: &c.Memory, 4: &c.Parallelism})
}

// unmarshalProtector decodes and checks a protector file as fscrypt does
// (ProtectorData.CheckValidity).
func unmarshalProtector(data []byte) (*Protector, error) {
	var p Protector
	err := decode(data, func(num, typ int, v uint64, b []byte) error {
		switch num {
		case 1, 3:
			if err := want(typ, wireLen); err != nil {
				return err
			}
			if num == 1 {
				p.Descriptor = string(b)
			} else {
				p.Name = string(b)
			}
		case 2, 6:
			if err := want(typ, wireVarint); err != nil {
				return err
			}
			if num == 2 {
				p.Source = Source(v)
			} else {
				p.UID = int64(v)
			}
		case 4:
			if err := want(typ, wireLen); err != nil {
				return err
			}
			if p.Costs == nil {
				p.Costs = &HashingCosts{}
			}
			return p.Costs.unmarshal(b)
		case 5:
			if err := want(typ, wireLen); err != nil {
				return err
			}
			p.Salt = append([]byte(nil), b...)
		case 7:
			if err := want(typ, wireLen); err != nil {
				return err
			}
			return p.WrappedKey.unmarshal(b)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fscrypt protector: %w", err)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("fscrypt protector: %w", err)
	}
	return &p, nil
}

// unmarshalPolicy decodes and checks a policy file as fscrypt does
// (PolicyData.CheckValidity), for v2 policies.
func unmarshalPolicy(data []byte) (*Policy, error) {
	var p Policy
	err := decode(data, func(num, typ int, _ uint64, b []byte) error {
		if num > 3 {
			return nil
		}
		if err := want(typ, wireLen); err != nil {
			return err
		}
		switch num {
		case 1:
			p.KeyDescriptor = string(b)
		case 2:
			return p.Options.unmarshal(b)
		case 3:
			var k PolicyKey
			err := decode(b, func(num, typ int, _ uint64, b []byte) error {
				if num > 2 {
					return nil
				}
				if err := want(typ, wireLen); err != nil {
					return err
				}
				if num == 1 {
					k.ProtectorDescriptor = string(b)
					return nil
				}
				return k.WrappedKey.unmarshal(b)
			})
			if err != nil {
				return err
			}
			p.WrappedKeys = append(p.WrappedKeys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fscrypt policy: %w", err)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("fscrypt policy: %w", err)
	}
	return &p, nil
}

// check applies fscrypt's checks to a wrapped key of keyLen bytes.
func (w *WrappedKey) check(keyLen int) error {
	switch {
	case len(w.IV) != ivLen:
		return fmt.Errorf("IV is %d bytes, want %d", len(w.IV), ivLen)
	case len(w.HMAC) != hmacLen:
		return fmt.Errorf("HMAC is %d bytes, want %d", len(w.HMAC), hmacLen)
	case len(w.EncryptedKey) != keyLen:
		return fmt.Errorf("encrypted key is %d bytes, want %d", len(w.EncryptedKey), keyLen)
	}
	return nil
}

// check applies fscrypt's ProtectorData checks.
func (p *Protector) check() error {
	switch p.Source {
	case SourceRawKey:
	case SourcePAMPassphrase, SourceCustomPassphrase:
		c := p.Costs
		if c == nil || c.Time <= 0 || c.Parallelism <= 0 || c.Memory < 8*c.Parallelism {
			return errors.New("passphrase hashing costs are missing or invalid")
		}
		if len(p.Salt) != saltLen {
			return fmt.Errorf("salt is %d bytes, want %d", len(p.Salt), saltLen)
		}
		if p.Source == SourcePAMPassphrase && p.UID < 0 {
			return fmt.Errorf("uid %d is negative", p.UID)
		}
	default:
		return fmt.Errorf("source %d is not a passphrase or raw key", p.Source)
	}
	if !isHex(p.Descriptor, protectorDescriptorLen) {
		return fmt.Errorf("descriptor %q is not %d hex digits", p.Descriptor, protectorDescriptorLen)
	}
	if err := p.WrappedKey.check(InternalKeyLen); err != nil {
		return fmt.Errorf("wrapped protector key: %w", err)
	}
	return nil
}

// check applies fscrypt's PolicyData checks, for a v2 policy.
func (p *Policy) check() error {
	o := p.Options
	switch o.Padding {
	case 4, 8, 16, 32:
	default:
		return fmt.Errorf("padding %d is not 4, 8, 16 or 32", o.Padding)
	}
	if o.Contents <= 0 || o.Filenames <= 0 {
		return errors.New("contents or filenames mode is not set")
	}
	if o.PolicyVersion != 2 {
		return fmt.Errorf("policy version %d is not 2", o.PolicyVersion)
	}
	if !isHex(p.KeyDescriptor, policyDescriptorLenV2) {
		return fmt.Errorf("key descriptor %q is not %d hex digits", p.KeyDescriptor, policyDescriptorLenV2)
	}
	for i, k := range p.WrappedKeys {
		if !isHex(k.ProtectorDescriptor, protectorDescriptorLen) {
			return fmt.Errorf("wrapped key %d: protector descriptor %q is not %d hex digits", i, k.ProtectorDescriptor, protectorDescriptorLen)
		}
		if err := k.WrappedKey.check(policyKeyLen); err != nil {
			return fmt.Errorf("wrapped key %d: %w", i, err)
		}
	}
	return nil
}

// isHex reports whether s is n lower-case hex digits, as fscrypt's
// descriptors are.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
