package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Setting is one entry of a serve configuration file: a flag name and its
// value as text, with the line it came from.
type Setting struct {
	Name  string
	Value string
	Line  int
}

// ParseConfig reads a serve configuration file: a YAML (or JSON) mapping from
// serve's flag names to scalar values, e.g.
//
//	upstream: http://127.0.0.1:8000
//	listen: 0.0.0.0:8443
//	max-tokens: 2048
//
// Errors name the line. The caller decides which names are known.
func ParseConfig(data []byte) ([]Setting, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config line %d: want a mapping of setting: value", m.Line)
	}
	var out []Setting
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("config line %d: %q must be a single value", k.Line, k.Value)
		}
		if seen[k.Value] {
			return nil, fmt.Errorf("config line %d: %q set twice", k.Line, k.Value)
		}
		seen[k.Value] = true
		out = append(out, Setting{Name: k.Value, Value: v.Value, Line: k.Line})
	}
	return out, nil
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string) ([]Setting, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	s, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// String shows a setting as it would be written on the command line.
func (s Setting) String() string { return "--" + s.Name + "=" + strconv.Quote(s.Value) }
