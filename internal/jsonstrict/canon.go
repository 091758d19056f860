package jsonstrict

import (
	"bytes"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Readers of one document must read it the same way: a check made on one
// reading and an action taken on another is no check at all. Go's
// encoding/json matches object keys to struct fields case-insensitively,
// with Unicode folding ("MAX_TOKENS" and "max_tokenſ" both set max_tokens),
// and lets the last of duplicate keys win; Python readers are
// case-sensitive and also keep the last. The canonicalizer below parses a
// document once, refuses what different readers could read differently,
// and writes each value again canonically. The gateway forwards its output
// instead of the client's bytes; Decode uses it to refuse duplicate keys.

// MaxDepth bounds nesting, as encoding/json's own limit (10000) does.
const MaxDepth = 1000

var (
	// ErrSyntax is what encoding/json would refuse too.
	ErrSyntax = errors.New("not valid JSON")
	// ErrTooDeep is nesting deeper than MaxDepth.
	ErrTooDeep = fmt.Errorf("nested more than %d levels deep", MaxDepth)
)

// KeyError is a document that is JSON but can be read more than one way:
// a key that appears twice in one object, or keys that differ only in case.
// Msg names the key.
type KeyError struct{ Msg string }

func (e *KeyError) Error() string { return e.Msg }

// Fold returns a spelling of s shared by every string that a
// case-insensitive reader could take for s. Go's encoding/json matches keys
// by Unicode simple folding ("ſ" matches "s", "K", the Kelvin sign, matches
// "k"); readers that lower-case and then upper-case a rune also take "İ"
// and "ı" for "i". Each rune becomes the smallest rune of the simple-folding
// orbit of ToUpper(ToLower(r)), which covers both.
func Fold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		b := []byte(s)
		for i, c := range b {
			if 'a' <= c && c <= 'z' {
				b[i] = c - 'a' + 'A'
			}
		}
		return string(b)
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		r = unicode.ToUpper(unicode.ToLower(r))
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		out = utf8.AppendRune(out, low)
	}
	return string(out)
}

// Member is one member of a JSON object, in the order it was sent.
type Member struct {
	Name  string // the key, decoded
	Key   []byte // the key, encoded canonically, with its colon
	Value []byte // the value, canonical JSON
}

// Object reads data as one JSON object and returns its members in order,
// each value re-encoded canonically: no insignificant space, strings written
// with the fewest escapes, and each string holding exactly what encoding/json
// reads from the original (invalid UTF-8 and lone surrogates become U+FFFD).
// It refuses (*KeyError) a key that appears twice in one object, at any
// depth, and at the top level two keys that fold to the same spelling (see
// Fold). check, when not nil, sees each top-level key and its folded
// spelling; an error it returns is returned. Nesting deeper than MaxDepth is
// ErrTooDeep; anything else that encoding/json refuses is ErrSyntax. One
// pass, no reflection: the gateway runs this on every request.
func Object(data []byte, check func(name, folded string) error) ([]Member, error) {
	c := &canonizer{in: data, out: make([]byte, 0, len(data)+16)}
	c.space()
	if c.i >= len(c.in) || c.in[c.i] != '{' {
		return nil, ErrSyntax
	}
	c.i++
	var members []Member
	seen := map[string]string{} // folded → as sent
	for first := true; ; first = false {
		c.space()
		if c.i < len(c.in) && c.in[c.i] == '}' && first {
			c.i++
			break
		}
		start := len(c.out)
		name, err := c.key()
		if err != nil {
			return nil, err
		}
		n := string(name) // once: it is the map value, the member's name and check's argument
		fold := Fold(n)
		if prev, ok := seen[fold]; ok {
			if prev == n {
				return nil, &KeyError{fmt.Sprintf("key %q appears twice", n)}
			}
			return nil, &KeyError{fmt.Sprintf("keys %q and %q differ only in case", prev, n)}
		}
		seen[fold] = n
		if check != nil {
			if err := check(n, fold); err != nil {
				return nil, err
			}
		}
		keyEnd := len(c.out)
		if err := c.value(1); err != nil {
			return nil, err
		}
		members = append(members, Member{Name: n, Key: c.out[start:keyEnd], Value: c.out[keyEnd:len(c.out):len(c.out)]})
		c.space()
		if c.i < len(c.in) && c.in[c.i] == ',' {
			c.i++
			continue
		}
		if c.i < len(c.in) && c.in[c.i] == '}' {
			c.i++
			break
		}
		return nil, ErrSyntax
	}
	c.space()
	if c.i != len(c.in) {
		return nil, ErrSyntax
	}
	return members, nil
}

// Unambiguous checks that data is one JSON value with no key twice in one
// object, at any depth. It returns ErrSyntax, ErrTooDeep or a *KeyError.
func Unambiguous(data []byte) error {
	c := &canonizer{in: data, out: make([]byte, 0, len(data))}
	if err := c.value(1); err != nil {
		return err
	}
	c.space()
	if c.i != len(c.in) {
		return ErrSyntax
	}
	return nil
}

// canonizer copies JSON from in to out canonically.
type canonizer struct {
	in  []byte
	i   int
	out []byte
}

func (c *canonizer) space() {
	for c.i < len(c.in) {
		switch c.in[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// key reads an object key and the colon after it, writes the key, and
// returns it decoded (a slice of in or out: valid until out grows).
func (c *canonizer) key() ([]byte, error) {
	if c.i >= len(c.in) || c.in[c.i] != '"' {
		return nil, ErrSyntax
	}
	start := len(c.out)
	decoded, err := c.str()
	if err != nil {
		return nil, err
	}
	c.space()
	if c.i >= len(c.in) || c.in[c.i] != ':' {
		return nil, ErrSyntax
	}
	c.i++
	c.out = append(c.out, ':')
	if decoded == nil { // plain: what was written, less its quotes
		decoded = c.out[start+1 : len(c.out)-2]
	}
	return decoded, nil
}

// value copies one value; depth counts the arrays and objects around it.
func (c *canonizer) value(depth int) error {
	c.space()
	if c.i >= len(c.in) {
		return ErrSyntax
	}
	switch ch := c.in[c.i]; {
	case ch == '"':
		_, err := c.str()
		return err
	case ch == '{' || ch == '[':
		if depth > MaxDepth {
			return ErrTooDeep
		}
		return c.compound(depth)
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || '0' <= ch && ch <= '9':
		return c.number()
	}
	return ErrSyntax
}

// compound copies an object or an array, refusing duplicate keys.
func (c *canonizer) compound(depth int) error {
	open := c.in[c.i]
	closing := byte(']')
	if open == '{' {
		closing = '}'
	}
	c.i++
	c.out = append(c.out, open)
	var keys []string // few keys: a slice beats a map
	var keySet map[string]bool
	for first := true; ; first = false {
		c.space()
		if first && c.i < len(c.in) && c.in[c.i] == closing {
			break
		}
		if !first {
			c.out = append(c.out, ',')
		}
		if open == '{' {
			k, err := c.key()
			if err != nil {
				return err
			}
			name := string(k)
			dup := keySet[name]
			if keySet == nil {
				dup = slicesContains(keys, name)
				if keys = append(keys, name); len(keys) > 16 {
					keySet = map[string]bool{}
					for _, k := range keys {
						keySet[k] = true
					}
				}
			} else {
				keySet[name] = true
			}
			if dup {
				return &KeyError{fmt.Sprintf("key %q appears twice in one object", name)}
			}
		}
		if err := c.value(depth + 1); err != nil {
			return err
		}
		c.space()
		if c.i < len(c.in) && c.in[c.i] == ',' {
			c.i++
			continue
		}
		if c.i < len(c.in) && c.in[c.i] == closing {
			break
		}
		return ErrSyntax
	}
	c.i++
	c.out = append(c.out, closing)
	return nil
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (c *canonizer) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.i:], []byte(lit)) {
		return ErrSyntax
	}
	c.i += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

// number copies a number literal after checking JSON's grammar.
func (c *canonizer) number() error {
	in, i := c.in, c.i
	digits := func() int {
		n := 0
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if in[i] == '-' {
		i++
	}
	if i < len(in) && in[i] == '0' {
		i++
	} else if digits() == 0 {
		return ErrSyntax
	}
	if i < len(in) && in[i] == '.' {
		i++
		if digits() == 0 {
			return ErrSyntax
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if digits() == 0 {
			return ErrSyntax
		}
	}
	c.out = append(c.out, in[c.i:i]...)
	c.i = i
	return nil
}

// str copies a string. A string that needs no change (no escape, no
// control or invalid byte) is copied as is and str returns nil; otherwise
// it is decoded as encoding/json decodes it, written again, and returned
// decoded.
func (c *canonizer) str() ([]byte, error) {
	in := c.in
	i := c.i + 1
	for i < len(in) {
		ch := in[i]
		if ch == '"' {
			c.out = append(c.out, in[c.i:i+1]...)
			c.i = i + 1
			return nil, nil
		}
		if ch == '\\' || ch < 0x20 {
			break
		}
		if ch < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(in[i:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	decoded, end, ok := Unquote(in, c.i)
	if !ok {
		return nil, ErrSyntax
	}
	c.i = end
	c.out = appendQuoted(c.out, decoded)
	return decoded, nil
}

// Unquote decodes the string that starts with the quote at in[start] as
// encoding/json does, returning the index after its closing quote.
func Unquote(in []byte, start int) (out []byte, end int, ok bool) {
	out = make([]byte, 0, 16)
	for i := start + 1; i < len(in); {
		ch := in[i]
		switch {
		case ch == '"':
			return out, i + 1, true
		case ch < 0x20:
			return nil, 0, false
		case ch == '\\':
			if i+1 >= len(in) {
				return nil, 0, false
			}
			switch e := in[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(in, i+2)
				if !ok {
					return nil, 0, false
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// A high surrogate followed by an escaped low one is
					// one character; anything else is U+FFFD.
					if r2, ok := hex4(in, i+2); ok && i+1 < len(in) && in[i] == '\\' && in[i+1] == 'u' {
						if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
							out = utf8.AppendRune(out, dec)
							i += 6
							continue
						}
					}
					r = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return nil, 0, false
			}
			i += 2
		case ch < utf8.RuneSelf:
			out = append(out, ch)
			i++
		default:
			r, size := utf8.DecodeRune(in[i:])
			out = utf8.AppendRune(out, r) // an invalid byte: U+FFFD
			i += size
		}
	}
	return nil, 0, false
}

func hex4(in []byte, i int) (rune, bool) {
	if i+4 > len(in) {
		return 0, false
	}
	var r rune
	for _, ch := range in[i : i+4] {
		switch {
		case '0' <= ch && ch <= '9':
			ch -= '0'
		case 'a' <= ch && ch <= 'f':
			ch = ch - 'a' + 10
		case 'A' <= ch && ch <= 'F':
			ch = ch - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(ch)
	}
	return r, true
}

// appendQuoted writes s (valid UTF-8) as a JSON string, escaping only what
// JSON requires.
func appendQuoted(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, ch := range s {
		switch {
		case ch == '"' || ch == '\\':
			b = append(b, '\\', ch)
		case ch == '\n':
			b = append(b, '\\', 'n')
		case ch == '\r':
			b = append(b, '\\', 'r')
		case ch == '\t':
			b = append(b, '\\', 't')
		case ch < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xF])
		default:
			b = append(b, ch)
		}
	}
	return append(b, '"')
}
