package kb

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokens returns the index terms of text, in order: every character and
// every pair of adjacent characters of a run of Chinese, Japanese or Korean
// script (so a query needs no dictionary to match a word it has never seen),
// and lower-cased, lightly stemmed Latin words and numbers. Everything else
// (punctuation, spaces, symbols) separates terms.
//
// A term never contains a space or a double quote, so terms can be joined
// with spaces for storage and quoted for an FTS5 query without escaping.
func Tokens(text string) []string {
	var out []string
	eachTerm(text, func(k cjkKey) { out = append(out, k.String()) }, func(w string) { out = append(out, w) })
	return out
}

// cjkKey is a CJK term without a string: one character in the high 32
// bits, and the next in the low 32 bits for a pair (0 for a single
// character, as 0 is never a CJK character). Indexing by key instead of by
// string spares an allocation and a string hash per character.
type cjkKey uint64

func (k cjkKey) String() string {
	if r2 := rune(k & 0xffffffff); r2 != 0 {
		return string([]rune{rune(k >> 32), r2})
	}
	return string(rune(k >> 32))
}

// cjkKeyOf returns the key of a one- or two-character CJK term.
func cjkKeyOf(t string) (cjkKey, bool) {
	r1, n1 := utf8.DecodeRuneInString(t)
	if !isCJK(r1) {
		return 0, false
	}
	if n1 == len(t) {
		return cjkKey(r1) << 32, true
	}
	r2, n2 := utf8.DecodeRuneInString(t[n1:])
	if !isCJK(r2) || n1+n2 != len(t) {
		return 0, false
	}
	return cjkKey(r1)<<32 | cjkKey(r2), true
}

// eachTerm calls cjk for every character and adjacent pair of a CJK run,
// and word for every lower-cased, stemmed Latin word or number, in order:
// the terms Tokens returns.
func eachTerm(text string, cjk func(cjkKey), word func(string)) {
	var prev rune // the previous CJK character of the current run, 0 when none
	var buf [maxWordBytes + utf8.UTFMax]byte
	w := buf[:0]
	flush := func() {
		if len(w) > 0 {
			if s := stem(string(w)); s != "" {
				word(s)
			}
			w = w[:0]
		}
	}
	for _, r := range text {
		switch {
		case isCJK(r):
			flush()
			cjk(cjkKey(r) << 32)
			if prev != 0 {
				cjk(cjkKey(prev)<<32 | cjkKey(r))
			}
			prev = r
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			prev = 0
			if len(w) < maxWordBytes {
				w = utf8.AppendRune(w, unicode.ToLower(r))
			}
		default:
			prev = 0
			flush()
		}
	}
	flush()
}

// maxWordBytes bounds one Latin term; longer runs (base64, hashes) are cut.
const maxWordBytes = 64

// isCJK reports whether r belongs to a script written without spaces
// between words.
func isCJK(r rune) bool {
	if r < 0x1100 {
		return false // fast path: Latin, Greek, Cyrillic and the rest
	}
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}

// stem strips the common English inflections from a lower-case word: a
// light stemmer (plurals, -ing, -ed, -ly, -ies), enough that "policies" finds
// "policy" and "approved" finds "approve". Words of three letters or fewer,
// and words with digits, are kept as they are.
func stem(w string) string {
	if utf8.RuneCountInString(w) <= 3 || strings.IndexFunc(w, unicode.IsDigit) >= 0 {
		return w
	}
	switch {
	case strings.HasSuffix(w, "sses"):
		return w[:len(w)-2]
	case strings.HasSuffix(w, "ies"):
		return w[:len(w)-3] + "y"
	case strings.HasSuffix(w, "ss"), strings.HasSuffix(w, "us"), strings.HasSuffix(w, "is"):
		// class, status, analysis: not plurals
	case strings.HasSuffix(w, "s"):
		w = w[:len(w)-1]
	}
	for _, suf := range []string{"ingly", "edly", "ing", "ed", "ly"} {
		if s, ok := strings.CutSuffix(w, suf); ok && hasVowel(s) && utf8.RuneCountInString(s) >= 3 {
			w = s
			// approv(ed) -> approve, hop(p)ing -> hop
			if n := len(w); n >= 2 && w[n-1] == w[n-2] && !strings.ContainsRune("lsz", rune(w[n-1])) {
				w = w[:n-1]
			} else if strings.HasSuffix(w, "at") || strings.HasSuffix(w, "bl") || strings.HasSuffix(w, "iz") || strings.HasSuffix(w, "v") {
				w += "e"
			}
			break
		}
	}
	return strings.TrimSuffix(w, "e")
}

func hasVowel(s string) bool { return strings.ContainsAny(s, "aeiouy") }
