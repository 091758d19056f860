package jsonstrict

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
)

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// exactKeys walks data (already decoded into a value of type t) alongside t
// and refuses an object key that encoding/json took for a struct field only
// because it ignores case ("sChemAVersion" for schemaVersion). Types that
// decode themselves (json.Unmarshaler) and interface values are left to
// their own rules. path names where in the document the walk is.
func exactKeys(data []byte, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) ||
		t.Implements(textUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return nil // null, or not an object: encoding/json already judged it
		}
		fs := fieldsOf(t)
		for _, k := range sortedKeys(obj) {
			if ft, ok := fs.exact[k]; ok {
				if err := exactKeys(obj[k], ft, join(path, k)); err != nil {
					return err
				}
				continue
			}
			if name, ok := fs.folded[Fold(k)]; ok {
				return &KeyError{fmt.Sprintf("key %q%s: did you mean %q? keys are case-sensitive", k, where(path), name)}
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return nil
		}
		for _, k := range sortedKeys(obj) {
			if err := exactKeys(obj[k], t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // base64 or numbers: no keys
		}
		var arr []json.RawMessage
		if json.Unmarshal(data, &arr) != nil {
			return nil
		}
		for i, e := range arr {
			if err := exactKeys(e, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func where(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// structFields are the JSON names of a struct type's fields, as
// encoding/json sees them.
type structFields struct {
	exact  map[string]reflect.Type // name → field type
	folded map[string]string       // Fold(name) → name
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	fs := &structFields{exact: map[string]reflect.Type{}, folded: map[string]string{}}
	collect(t, fs, map[reflect.Type]bool{})
	fieldCache.Store(t, fs)
	return fs
}

// collect adds t's fields to fs, flattening untagged embedded structs as
// encoding/json does; where names collide the shallower field wins, which
// is enough to know which keys are field names.
func collect(t reflect.Type, fs *structFields, visiting map[reflect.Type]bool) {
	if visiting[t] {
		return
	}
	visiting[t] = true
	defer delete(visiting, t)
	var embedded []reflect.Type
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := sf.Type
		if sf.Anonymous {
			et := ft
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if name == "" && et.Kind() == reflect.Struct {
				embedded = append(embedded, et)
				continue
			}
			if !sf.IsExported() {
				continue
			}
		} else if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, ok := fs.exact[name]; !ok {
			fs.exact[name] = ft
			fs.folded[Fold(name)] = name
		}
	}
	for _, et := range embedded {
		collect(et, fs, visiting)
	}
}
