package demomodel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ggufMagic is the first four bytes of every GGUF file.
const ggufMagic = "GGUF"

// ggufVersion is the GGUF format version this package writes and reads.
const ggufVersion = 3

// defaultAlignment is the alignment of tensor data when general.alignment is
// absent.
const defaultAlignment = 32

// ValueType is the type tag of a GGUF metadata value.
type ValueType uint32

// GGUF metadata value types, as numbered by the format.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

// tensorF32 is the GGML type number of 32-bit float tensors.
const tensorF32 = 0

// Limits a reader applies to outside input, so that a hostile header cannot
// make it allocate without bound.
const (
	maxStringLen = 1 << 20
	maxArrayLen  = 1 << 24
	maxCount     = 1 << 20
	maxDims      = 4
)

// KV is one metadata key and its decoded value: uint8 … float64, bool, string,
// or a []any for arrays.
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// TensorInfo describes one tensor: its name, its dimensions (innermost first,
// as GGML counts them), its GGML type and its offset from the start of the data
// section.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   uint32
	Offset uint64
}

// Elements is the number of values in the tensor.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Header is the decoded front of a GGUF file: everything before tensor data.
type Header struct {
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	DataOffset int64 // where the data section begins, from the start of the file
}

// Lookup returns the value stored under key.
func (h *Header) Lookup(key string) (any, bool) {
	for _, kv := range h.KV {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Alignment is general.alignment, or defaultAlignment when absent.
func (h *Header) Alignment() uint64 {
	if v, ok := h.Lookup("general.alignment"); ok {
		if a, ok := v.(uint32); ok && a > 0 {
			return uint64(a)
		}
	}
	return defaultAlignment
}

// ReadHeader decodes the header, metadata and tensor infos of a GGUF v3 file.
// It does not read tensor data. Errors name the field or key that is wrong and
// its byte offset; sizes beyond sane limits are refused before allocating.
func ReadHeader(r io.Reader) (*Header, error) {
	d := &decoder{r: bufio.NewReader(r)}
	h, err := d.header()
	if err != nil {
		return nil, fmt.Errorf("read gguf: %w", err)
	}
	return h, nil
}

type decoder struct {
	r   *bufio.Reader
	off int64
}

func (d *decoder) read(n int, what string) ([]byte, error) {
	var b []byte
	var err error
	if n <= 64<<10 {
		b = make([]byte, n)
		var k int
		k, err = io.ReadFull(d.r, b)
		b = b[:k]
	} else {
		// A large declared length is believed only as far as data arrives.
		b, err = io.ReadAll(io.LimitReader(d.r, int64(n)))
		if err == nil && len(b) < n {
			err = io.ErrUnexpectedEOF
		}
	}
	d.off += int64(len(b))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s at byte %d: file ends early", what, d.off)
		}
		return nil, fmt.Errorf("%s at byte %d: %w", what, d.off, err)
	}
	return b, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.read(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.read(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (d *decoder) str(what string) (string, error) {
	at := d.off
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > maxStringLen {
		return "", fmt.Errorf("%s at byte %d: length %d exceeds %d", what, at, n, maxStringLen)
	}
	b, err := d.read(int(n), what)
	return string(b), err
}

func (d *decoder) header() (*Header, error) {
	magic, err := d.read(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(magic) != ggufMagic {
		return nil, fmt.Errorf("magic: %q is not %q", magic, ggufMagic)
	}
	h := &Header{}
	if h.Version, err = d.u32("version"); err != nil {
		return nil, err
	}
	if h.Version != ggufVersion {
		return nil, fmt.Errorf("version: %d is not supported (want %d)", h.Version, ggufVersion)
	}
	nt, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nkv, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if nt > maxCount || nkv > maxCount {
		return nil, fmt.Errorf("counts: %d tensors, %d metadata keys exceed %d", nt, nkv, maxCount)
	}
	seen := map[string]bool{}
	for i := range nkv {
		key, err := d.str(fmt.Sprintf("metadata[%d] key", i))
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, fmt.Errorf("metadata key %q at byte %d: listed twice", key, d.off)
		}
		seen[key] = true
		t, err := d.u32("type of " + key)
		if err != nil {
			return nil, err
		}
		v, err := d.value(ValueType(t), key, true)
		if err != nil {
			return nil, err
		}
		h.KV = append(h.KV, KV{Key: key, Type: ValueType(t), Value: v})
	}
	names := map[string]bool{}
	for i := range nt {
		var ti TensorInfo
		if ti.Name, err = d.str(fmt.Sprintf("tensor[%d] name", i)); err != nil {
			return nil, err
		}
		if names[ti.Name] {
			return nil, fmt.Errorf("tensor %q at byte %d: listed twice", ti.Name, d.off)
		}
		names[ti.Name] = true
		nd, err := d.u32("dimension count of " + ti.Name)
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > maxDims {
			return nil, fmt.Errorf("tensor %q: %d dimensions (want 1 to %d)", ti.Name, nd, maxDims)
		}
		total := uint64(1)
		for j := range nd {
			dim, err := d.u64(fmt.Sprintf("dimension %d of %s", j, ti.Name))
			if err != nil {
				return nil, err
			}
			if dim == 0 || dim > math.MaxUint64/total {
				return nil, fmt.Errorf("tensor %q: dimension %d is %d (zero or overflowing)", ti.Name, j, dim)
			}
			total *= dim
			ti.Dims = append(ti.Dims, dim)
		}
		if ti.Type, err = d.u32("type of " + ti.Name); err != nil {
			return nil, err
		}
		if ti.Offset, err = d.u64("offset of " + ti.Name); err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, ti)
	}
	align := h.Alignment()
	if align&(align-1) != 0 {
		return nil, fmt.Errorf("general.alignment: %d is not a power of two", align)
	}
	for _, t := range h.Tensors {
		if t.Offset%align != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, align)
		}
	}
	h.DataOffset = int64((uint64(d.off) + align - 1) / align * align)
	return h, nil
}

func (d *decoder) value(t ValueType, key string, arrayAllowed bool) (any, error) {
	what := "value of " + key
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		b, err := d.read(1, what)
		if err != nil {
			return nil, err
		}
		switch t {
		case TypeUint8:
			return b[0], nil
		case TypeInt8:
			return int8(b[0]), nil
		}
		if b[0] > 1 {
			return nil, fmt.Errorf("%s at byte %d: bool is %d", what, d.off-1, b[0])
		}
		return b[0] == 1, nil
	case TypeUint16, TypeInt16:
		b, err := d.read(2, what)
		if err != nil {
			return nil, err
		}
		v := binary.LittleEndian.Uint16(b)
		if t == TypeInt16 {
			return int16(v), nil
		}
		return v, nil
	case TypeUint32, TypeInt32, TypeFloat32:
		v, err := d.u32(what)
		if err != nil {
			return nil, err
		}
		switch t {
		case TypeInt32:
			return int32(v), nil
		case TypeFloat32:
			return math.Float32frombits(v), nil
		}
		return v, nil
	case TypeUint64, TypeInt64, TypeFloat64:
		v, err := d.u64(what)
		if err != nil {
			return nil, err
		}
		switch t {
		case TypeInt64:
			return int64(v), nil
		case TypeFloat64:
			return math.Float64frombits(v), nil
		}
		return v, nil
	case TypeString:
		return d.str(what)
	case TypeArray:
		if !arrayAllowed {
			return nil, fmt.Errorf("%s at byte %d: nested arrays are not supported", what, d.off)
		}
		et, err := d.u32("element type of " + key)
		if err != nil {
			return nil, err
		}
		at := d.off
		n, err := d.u64("length of " + key)
		if err != nil {
			return nil, err
		}
		if n > maxArrayLen {
			return nil, fmt.Errorf("%s at byte %d: %d elements exceed %d", what, at, n, maxArrayLen)
		}
		// Grow as elements arrive rather than trusting n for the allocation.
		var out []any
		for i := range n {
			v, err := d.value(ValueType(et), fmt.Sprintf("%s[%d]", key, i), false)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s at byte %d: unknown value type %d", what, d.off-4, t)
}

// encoder writes GGUF little-endian values, keeping the first error.
type encoder struct {
	w   io.Writer
	n   int64
	err error
}

func (e *encoder) bytes(b []byte) {
	if e.err != nil {
		return
	}
	k, err := e.w.Write(b)
	e.n += int64(k)
	e.err = err
}

func (e *encoder) u32(v uint32) { e.bytes(binary.LittleEndian.AppendUint32(nil, v)) }
func (e *encoder) u64(v uint64) { e.bytes(binary.LittleEndian.AppendUint64(nil, v)) }

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	e.bytes([]byte(s))
}

// kv writes one metadata entry; v is uint32, int32, uint64, float32, bool,
// string, []string or []int32 (the types the demo model needs).
func (e *encoder) kv(key string, v any) {
	e.str(key)
	switch v := v.(type) {
	case uint32:
		e.u32(uint32(TypeUint32))
		e.u32(v)
	case int32:
		e.u32(uint32(TypeInt32))
		e.u32(uint32(v))
	case uint64:
		e.u32(uint32(TypeUint64))
		e.u64(v)
	case float32:
		e.u32(uint32(TypeFloat32))
		e.u32(math.Float32bits(v))
	case bool:
		e.u32(uint32(TypeBool))
		if v {
			e.bytes([]byte{1})
		} else {
			e.bytes([]byte{0})
		}
	case string:
		e.u32(uint32(TypeString))
		e.str(v)
	case []string:
		e.u32(uint32(TypeArray))
		e.u32(uint32(TypeString))
		e.u64(uint64(len(v)))
		for _, s := range v {
			e.str(s)
		}
	case []int32:
		e.u32(uint32(TypeArray))
		e.u32(uint32(TypeInt32))
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.u32(uint32(x))
		}
	default:
		if e.err == nil {
			e.err = fmt.Errorf("metadata %s: unsupported value type %T", key, v)
		}
	}
}

// pad writes zero bytes up to the next multiple of align.
func (e *encoder) pad(align int64) {
	if r := e.n % align; r != 0 {
		e.bytes(make([]byte, align-r))
	}
}
