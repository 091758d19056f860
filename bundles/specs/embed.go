package specs

import (
	"embed"
	"fmt"
	"os"
	"sort"
	"strings"
)

//go:embed *.yaml
var embedded embed.FS

// Names lists the specs built into the binary.
func Names() []string {
	ents, _ := embedded.ReadDir(".")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(out)
	return out
}

// Embedded returns the YAML of a built-in spec.
func Embedded(name string) ([]byte, error) {
	data, err := embedded.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("no built-in spec %q (built in: %s)", name, strings.Join(Names(), ", "))
	}
	return data, nil
}

// Load parses a built-in spec by name.
func Load(name string) (*Spec, error) {
	data, err := Embedded(name)
	if err != nil {
		return nil, err
	}
	return Parse("specs/"+name+".yaml", data)
}

// LoadFile parses the operator's spec file.
func LoadFile(file string) (*Spec, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	defer f.Close()
	data := make([]byte, maxSpecBytes+1)
	n, _ := readFull(f, data)
	return Parse(file, data[:n])
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
