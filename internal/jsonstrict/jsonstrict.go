// Package jsonstrict reads the project's JSON files from outside (manifests,
// signatures, indexes, token files, state records) strictly: exactly one
// value, no unknown fields, no trailing data, errors that name the line and
// column. It must never accept a document that another reader could
// understand differently.
package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Decode decodes exactly one JSON value from data into v: unknown fields,
// trailing data and type errors are refused, syntax and type errors name
// their line and column.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the closing brace")
	}
	return nil
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
