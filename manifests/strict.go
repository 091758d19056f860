package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// DecodeStrict decodes exactly one JSON value from data into v: unknown
// fields, trailing data and type errors are refused, syntax and type errors
// name their line and column. Every file format of the project that comes
// from outside (manifests, signatures, indexes, token files, state records)
// is read through it.
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the closing brace")
	}
	return nil
}
