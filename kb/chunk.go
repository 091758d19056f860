package kb

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Section is a run of text under one heading path on one page, as an
// extractor finds it: the unit that chunking cuts.
type Section struct {
	Heading []string // outermost first; empty before the first heading
	Page    int      // 1-based; 0 when the format has no pages
	Text    string
}

// Chunk is a piece of a document small enough to rank and to quote.
type Chunk struct {
	Ordinal int
	Heading string // the heading path joined with " > "
	Page    int
	Text    string
	Flagged bool // reads like an instruction to a model; see Flag
}

// ChunkOptions size the chunks. The zero value means the defaults.
type ChunkOptions struct {
	// MaxChars is the size a chunk grows to, in characters (default 200).
	// A chunk ends at a sentence end at or before it; a single longer
	// sentence is cut at a clause mark or, failing that, at MaxChars.
	MaxChars int
	// Overlap repeats the last sentence of a chunk at the start of the
	// next when that sentence has at most this many characters (default 60;
	// negative: never), so an answer split across a boundary is still
	// found with its context.
	Overlap int
}

func (o ChunkOptions) withDefaults() ChunkOptions {
	if o.MaxChars <= 0 {
		o.MaxChars = 200
	}
	if o.Overlap == 0 {
		o.Overlap = 60
	}
	return o
}

// Split cuts sections into chunks that end at sentence ends and never cross
// a section (so each keeps its heading path and page).
func Split(sections []Section, o ChunkOptions) []Chunk {
	o = o.withDefaults()
	var out []Chunk
	for _, s := range sections {
		heading := strings.Join(s.Heading, " > ")
		for _, text := range packSentences(sentences(s.Text, o.MaxChars), o) {
			out = append(out, Chunk{Ordinal: len(out), Heading: heading, Page: s.Page, Text: text, Flagged: Flag(text)})
		}
	}
	return out
}

// packSentences joins sentences greedily into chunks of at most o.MaxChars.
func packSentences(sents []string, o ChunkOptions) []string {
	var out []string
	var cur []string
	n := 0
	for _, s := range sents {
		l := utf8.RuneCountInString(s)
		if n > 0 && n+l > o.MaxChars {
			out = append(out, joinSentences(cur))
			last := cur[len(cur)-1]
			cur, n = cur[:0], 0 // joinSentences copied the strings out
			if ll := utf8.RuneCountInString(last); o.Overlap > 0 && ll <= o.Overlap && ll+l <= o.MaxChars && len(out[len(out)-1]) > len(last) {
				cur, n = append(cur, last), ll
			}
		}
		cur = append(cur, s)
		n += l
	}
	if n > 0 {
		out = append(out, joinSentences(cur))
	}
	return out
}

// sentences splits text at sentence ends (。！？!? always; '.' before a
// space or the end; line breaks), trims each, and cuts any sentence longer
// than max at a clause mark (，；,;) or at max characters.
func sentences(text string, max int) []string {
	var out []string
	add := func(s string) {
		s = strings.TrimSpace(collapseSpace(s))
		for utf8.RuneCountInString(s) > max {
			cut := cutAt(s, max)
			out = append(out, strings.TrimSpace(s[:cut]))
			s = strings.TrimSpace(s[cut:])
		}
		if s != "" {
			out = append(out, s)
		}
	}
	start := 0
	for i, r := range text {
		end := -1
		switch r {
		case '。', '！', '？', '!', '?', '\n', '；':
			end = i + utf8.RuneLen(r)
		case '.':
			if next, _ := utf8.DecodeRuneInString(text[i+1:]); i+1 == len(text) || unicode.IsSpace(next) {
				end = i + 1
			}
		}
		if end < 0 {
			continue
		}
		// Keep closing quotes and brackets with their sentence.
		for end < len(text) {
			r, sz := utf8.DecodeRuneInString(text[end:])
			if !strings.ContainsRune("”’」』）)\"'", r) {
				break
			}
			end += sz
		}
		if end > start {
			add(text[start:end])
			start = end
		}
	}
	add(text[start:])
	return out
}

// cutAt returns the byte offset at which to cut s, which has more than max
// characters: after the last clause mark in its second half, else after
// max characters.
func cutAt(s string, max int) int {
	best, n, hard := -1, 0, len(s)
	for i, r := range s {
		if n == max {
			hard = i
			break
		}
		n++
		if n > max/2 && strings.ContainsRune("，,；;：:、 ", r) {
			best = i + utf8.RuneLen(r)
		}
	}
	if best > 0 {
		return best
	}
	return hard
}

// collapseSpace turns every run of white space into one space.
func collapseSpace(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) && r != ' ' }) && !strings.Contains(s, "  ") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// joinSentences concatenates sentences, with a space between two that meet
// in Latin script and none between Chinese ones.
func joinSentences(ss []string) string {
	var b strings.Builder
	size := len(ss) - 1
	for _, s := range ss {
		size += len(s)
	}
	b.Grow(size)
	for i, s := range ss {
		if i > 0 {
			prev, _ := utf8.DecodeLastRuneInString(ss[i-1])
			next, _ := utf8.DecodeRuneInString(s)
			if prev < utf8.RuneSelf && next < utf8.RuneSelf {
				b.WriteByte(' ')
			}
		}
		b.WriteString(s)
	}
	return b.String()
}
