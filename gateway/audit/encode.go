package audit

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// appendRequest appends r as json.Marshal writes it, byte for byte, when r
// is a request record without content; ok is false for every other record,
// which goes through json.Marshal. One record per request made
// encoding/json's reflection a sizable part of the gateway's CPU per
// request; FuzzAppendRequest holds the two encoders to the same output.
func appendRequest(b []byte, r *Record) (_ []byte, ok bool) {
	if r.Content != nil || r.KB != nil || r.KeyID != "" || r.PublicKey != "" || r.Previous != "" || r.Backup != "" || r.Torn != nil || r.Signature != nil ||
		r.Time.Year() < 0 || r.Time.Year() > 9999 || !finite(r.LatencyMs) || !finite(r.TTFTMs) {
		return b, false
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"kind":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, "2006-01-02T15:04:05.999999999Z07:00")
	b = append(b, `","prev":`...)
	b = appendString(b, r.Prev)
	for _, f := range [...]struct{ name, value string }{
		{`,"requestId":`, r.RequestID}, {`,"tokenId":`, r.TokenID}, {`,"client":`, r.Client},
		{`,"method":`, r.Method}, {`,"route":`, r.Route}, {`,"model":`, r.Model},
	} {
		if f.value != "" {
			b = appendString(append(b, f.name...), f.value)
		}
	}
	if r.Stream {
		b = append(b, `,"stream":true`...)
	}
	if r.Status != 0 {
		b = strconv.AppendInt(append(b, `,"status":`...), int64(r.Status), 10)
	}
	if r.Error != "" {
		b = appendString(append(b, `,"error":`...), r.Error)
	}
	if r.LatencyMs != 0 {
		b = appendFloat(append(b, `,"latencyMs":`...), r.LatencyMs)
	}
	if r.TTFTMs != 0 {
		b = appendFloat(append(b, `,"ttftMs":`...), r.TTFTMs)
	}
	if r.PromptTokens != 0 {
		b = strconv.AppendInt(append(b, `,"promptTokens":`...), int64(r.PromptTokens), 10)
	}
	if r.CompletionTokens != 0 {
		b = strconv.AppendInt(append(b, `,"completionTokens":`...), int64(r.CompletionTokens), 10)
	}
	return append(b, '}'), true
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// appendFloat writes f as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 is written e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString writes s as a JSON string as encoding/json does, HTML
// escaping included: invalid UTF-8 becomes U+FFFD, and <, >, &, U+2028
// and U+2029 are escaped.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}
