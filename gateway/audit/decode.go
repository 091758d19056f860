package audit

import (
	"bytes"
	"strconv"
	"time"
)

// decodeRequest reads a line that appendRequest could have written (a flat
// object of strings without escapes, integers, floats and true) into r, and
// reports false for anything else, which then goes through encoding/json.
// It needs no care beyond that: the verifier re-encodes every record it
// decodes and refuses a line that differs from its re-encoding by a byte,
// so a record this decoder read wrongly cannot pass. (Request lines a
// trusted checkpoint covers are not decoded at all: see covered.go.) It exists because encoding/json's
// reflection was most of the time "audit verify" and "backup verify" spent.
func decodeRequest(line []byte, r *Record) bool {
	p := line
	if len(p) < 2 || p[0] != '{' || p[len(p)-1] != '}' {
		return false
	}
	p = p[1 : len(p)-1]
	for len(p) > 0 {
		key, rest, ok := cutString(p)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		p = rest[1:]
		var val []byte
		if len(p) > 0 && p[0] == '"' {
			var s []byte
			if s, p, ok = cutString(p); !ok {
				return false
			}
			if !setString(r, key, s) {
				return false
			}
		} else {
			i := bytes.IndexByte(p, ',')
			if i < 0 {
				i = len(p)
			}
			val, p = p[:i], p[i:]
			if !setNumber(r, key, val) {
				return false
			}
		}
		if len(p) > 0 {
			if p[0] != ',' {
				return false
			}
			p = p[1:]
			if len(p) == 0 {
				return false
			}
		}
	}
	return true
}

// cutString splits a JSON string without escapes off the front of p and
// returns its contents.
func cutString(p []byte) (s, rest []byte, ok bool) {
	if len(p) == 0 || p[0] != '"' {
		return nil, nil, false
	}
	i := bytes.IndexByte(p[1:], '"')
	if i < 0 {
		return nil, nil, false
	}
	s = p[1 : 1+i]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, nil, false
	}
	return s, p[2+i:], true
}

func setString(r *Record, key, s []byte) bool {
	switch string(key) {
	case "kind":
		r.Kind = string(s)
	case "time":
		t, err := time.Parse(time.RFC3339Nano, string(s))
		if err != nil {
			return false
		}
		r.Time = t
	case "prev":
		r.Prev = string(s)
	case "requestId":
		r.RequestID = string(s)
	case "tokenId":
		r.TokenID = string(s)
	case "client":
		r.Client = string(s)
	case "method":
		r.Method = string(s)
	case "route":
		r.Route = string(s)
	case "model":
		r.Model = string(s)
	case "error":
		r.Error = string(s)
	default:
		return false
	}
	return true
}

func setNumber(r *Record, key, v []byte) bool {
	switch string(key) {
	case "stream":
		r.Stream = string(v) == "true"
		return r.Stream
	case "latencyMs", "ttftMs":
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return false
		}
		if key[0] == 'l' {
			r.LatencyMs = f
		} else {
			r.TTFTMs = f
		}
		return true
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return false
	}
	switch string(key) {
	case "seq":
		r.Seq = n
	case "status":
		r.Status = int(n)
	case "promptTokens":
		r.PromptTokens = int(n)
	case "completionTokens":
		r.CompletionTokens = int(n)
	default:
		return false
	}
	return true
}
