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
	var prev rune // the previous CJK character of the current run, 0 when none
	var word strings.Builder
	flush := func() {
		if word.Len() > 0 {
			if w := stem(word.String()); w != "" {
				out = append(out, w)
			}
			word.Reset()
		}
	}
	for _, r := range text {
		switch {
		case isCJK(r):
			flush()
			out = append(out, string(r))
			if prev != 0 {
				out = append(out, string([]rune{prev, r}))
			}
			prev = r
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			prev = 0
			if word.Len() < maxWordBytes {
				word.WriteRune(unicode.ToLower(r))
			}
		default:
			prev = 0
			flush()
		}
	}
	flush()
	return out
}

// maxWordBytes bounds one Latin term; longer runs (base64, hashes) are cut.
const maxWordBytes = 64

// isCJK reports whether r belongs to a script written without spaces
// between words.
func isCJK(r rune) bool {
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
