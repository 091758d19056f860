package specs

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/qwen-appliance/qwen-appliance/bundles/space"
)

// maxSpecBytes bounds a spec file; real specs are a few kilobytes.
const maxSpecBytes = 1 << 20

// Error is a spec problem with its place: "spec.yaml:12:5:
// runtime.artifacts[0].sha256: not 64 hex digits".
type Error struct {
	File  string
	Pos   position
	Field string
	Msg   string
}

type position struct{ Line, Column int }

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Pos.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Pos.Line, e.Pos.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Parse reads a spec strictly: unknown fields, duplicate keys, wrong
// types and invalid values are *Error values naming file, line, column
// and field. name is used in messages.
func Parse(name string, data []byte) (*Spec, error) {
	s := &Spec{file: name, pos: map[string]position{}}
	if len(data) > maxSpecBytes {
		return nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d bytes", maxSpecBytes)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{File: name, Msg: "empty document"}
	}
	d := decoder{file: name, pos: s.pos}
	if err := d.decode(doc.Content[0], reflect.ValueOf(s).Elem(), ""); err != nil {
		return nil, err
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// decoder maps YAML nodes onto tagged structs, recording where every field
// was written so later checks can point at it.
type decoder struct {
	file  string
	pos   map[string]position
	depth int
}

var sizeType = reflect.TypeOf(Size(0))

func (d *decoder) fail(n *yaml.Node, field, format string, args ...any) error {
	return &Error{File: d.file, Pos: position{n.Line, n.Column}, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, field string) error {
	if d.depth++; d.depth > 32 {
		return d.fail(n, field, "nested too deeply")
	}
	defer func() { d.depth-- }()
	if n.Kind == yaml.AliasNode {
		return d.fail(n, field, "aliases are not allowed in specs")
	}
	if field != "" {
		d.pos[field] = position{n.Line, n.Column}
	}
	if v.Type() == sizeType {
		if n.Kind != yaml.ScalarNode {
			return d.fail(n, field, "want a size like 24G")
		}
		sz, err := space.Parse(n.Value)
		if err != nil {
			return d.fail(n, field, "%v", err)
		}
		v.SetInt(sz)
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, v, field)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.fail(n, field, "want a list")
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, out.Index(i), fmt.Sprintf("%s[%d]", field, i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return d.fail(n, field, "want a mapping")
		}
		out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return d.fail(k, field, "keys must be plain strings")
			}
			if out.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				return d.fail(k, field+"."+k.Value, "written twice")
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(val, ev, field+"."+k.Value); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(out)
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return d.fail(n, field, "want a single %s value", kindName(v.Kind()))
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" {
			// Keep "1.0" or "0755" exactly as written instead of refusing a
			// number where a string is expected.
			if n.Tag == "!!null" {
				return nil
			}
			v.SetString(n.Value)
			return nil
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return d.fail(n, field, "want %s, got %q", kindName(v.Kind()), n.Value)
		}
		return nil
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "a non-negative whole number"
	default:
		return "a whole number"
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, field string) error {
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return nil
		}
		return d.fail(n, field, "want a mapping of fields")
	}
	t := v.Type()
	byName := map[string]int{}
	var known []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		byName[tag] = i
		known = append(known, tag)
	}
	sort.Strings(known)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		sub := name
		if field != "" {
			sub = field + "." + name
		}
		if k.Kind != yaml.ScalarNode {
			return d.fail(k, field, "keys must be plain strings")
		}
		idx, ok := byName[name]
		if !ok {
			return d.fail(k, sub, "unknown field (known fields: %s)", strings.Join(known, ", "))
		}
		if seen[name] {
			return d.fail(k, sub, "written twice")
		}
		seen[name] = true
		if err := d.decode(val, v.Field(idx), sub); err != nil {
			return err
		}
	}
	return nil
}

// IsError reports whether err is a spec problem (bad input, not I/O).
func IsError(err error) bool {
	var se *Error
	return errors.As(err, &se)
}
