package bundles

import (
	"embed"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

//go:embed specs/*.yaml
var embedded embed.FS

// SpecNames lists the specs built into the binary.
func SpecNames() []string {
	ents, _ := embedded.ReadDir("specs")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(out)
	return out
}

// EmbeddedSpec returns the YAML of a built-in spec.
func EmbeddedSpec(name string) ([]byte, error) {
	data, err := embedded.ReadFile(path.Join("specs", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("no built-in spec %q (built in: %s)", name, strings.Join(SpecNames(), ", "))
	}
	return data, nil
}

// LoadSpec parses a built-in spec by name.
func LoadSpec(name string) (*Spec, error) {
	data, err := EmbeddedSpec(name)
	if err != nil {
		return nil, err
	}
	return ParseSpec("specs/"+name+".yaml", data)
}

// LoadSpecFile parses the operator's spec file.
func LoadSpecFile(file string) (*Spec, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	defer f.Close()
	data := make([]byte, maxSpecBytes+1)
	n, _ := readFull(f, data)
	return ParseSpec(file, data[:n])
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
