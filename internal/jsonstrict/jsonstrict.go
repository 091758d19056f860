// Package jsonstrict reads the project's JSON files from outside (manifests,
// signatures, indexes, token files, state records) strictly, and holds the
// canonicalizer the gateway reads request bodies with. It must never accept a
// document that another reader could understand differently: a key twice in
// one object, a key that names a field only when case is ignored, trailing
// data.
package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// Decode decodes exactly one JSON value from data into v (a non-nil
// pointer). Unknown fields, trailing data and type errors are refused, and
// syntax and type errors name their line and column. Unlike encoding/json
// alone, it also refuses (*KeyError) a key that appears twice in one object
// at any depth, where encoding/json keeps the last, and a key that matches a
// field of v only when case is ignored ("sChemAVersion"), which
// encoding/json would take for schemaVersion. v may be partly filled when
// Decode fails.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the closing brace")
	}
	if err := Unambiguous(data); err != nil {
		return err
	}
	return exactKeys(data, reflect.TypeOf(v), "")
}

// describe adds the line and column to a syntax or type error.
func describe(data []byte, err error) error {
	var off int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		off = e.Offset
	case *json.UnmarshalTypeError:
		off = e.Offset
		if e.Field != "" {
			return fmt.Errorf("field %s: %w (at %s)", e.Field, err, position(data, off))
		}
	}
	if off < 0 {
		return err
	}
	return fmt.Errorf("%w (at %s)", err, position(data, off))
}

func position(data []byte, off int64) string {
	off = min(max(off, 0), int64(len(data)))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Sprintf("line %d, column %d", line, col)
}
