package bundles

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Generator makes a file the project builds itself (generated://NAME): the
// bytes, deterministically, and the facts about them.
type Generator struct {
	Write func(w io.Writer) error
	Meta  func() manifests.Meta
}

var (
	genMu      sync.Mutex
	generators = map[string]Generator{}
)

// RegisterGenerator makes generated://name available to specs.
func RegisterGenerator(name string, g Generator) {
	genMu.Lock()
	defer genMu.Unlock()
	generators[name] = g
}

func lookupGenerator(url string) (Generator, error) {
	name := strings.TrimPrefix(url, "generated://")
	genMu.Lock()
	defer genMu.Unlock()
	g, ok := generators[name]
	if !ok {
		var names []string
		for n := range generators {
			names = append(names, n)
		}
		sort.Strings(names)
		return Generator{}, fmt.Errorf("%s: no such generator (known: %s)", url, strings.Join(names, ", "))
	}
	return g, nil
}

// overlay copies every non-zero field of over onto base (both structs of the
// same type) and returns base.
func overlay[T any](base, over T) T {
	b := reflect.ValueOf(&base).Elem()
	o := reflect.ValueOf(over)
	for i := range o.NumField() {
		if !o.Field(i).IsZero() {
			b.Field(i).Set(o.Field(i))
		}
	}
	return base
}
