package kb

import (
	"slices"
	"strconv"
	"strings"
)

// CitationFilter removes from a model's answer the citations of blocks it
// was never given ("[7]" when there were three), as the answer streams by.
// A citation is an opening bracket ('[' or '【'), one to three-digit
// numbers separated by commas, '、' or spaces, and the closing bracket; a
// list keeps its valid numbers and disappears when none is valid. Text
// that might still become a citation ("[1" at the end of one delta) is
// held back until the next Write or Flush decides it. The zero value is
// not usable; see NewCitationFilter.
type CitationFilter struct {
	blocks  int
	pending string
	cited   []int
}

// maxCitationBytes bounds what a filter holds back: a longer bracket is
// text, not a citation.
const maxCitationBytes = 40

// NewCitationFilter returns a filter for an answer given blocks numbered
// 1 to blocks.
func NewCitationFilter(blocks int) *CitationFilter { return &CitationFilter{blocks: blocks} }

// StripCitations filters a whole answer; it returns the text and the valid
// block numbers it cites.
func StripCitations(text string, blocks int) (string, []int) {
	f := NewCitationFilter(blocks)
	out := f.Write(text) + f.Flush()
	return out, f.Cited()
}

// Write filters the next piece of the answer and returns what can be sent
// now.
func (f *CitationFilter) Write(s string) string {
	data := f.pending + s
	f.pending = ""
	var out strings.Builder
	for i := 0; i < len(data); {
		j, open := nextOpen(data, i)
		if j < 0 {
			// The start of a '【' cut between its bytes waits for the rest.
			tail := data[i:]
			for n := min(len(tail), len("【")-1); n > 0; n-- {
				if strings.HasPrefix("【", tail[len(tail)-n:]) {
					f.pending = tail[len(tail)-n:]
					tail = tail[:len(tail)-n]
					break
				}
			}
			out.WriteString(tail)
			break
		}
		out.WriteString(data[i:j])
		n, nums, state := parseCitation(data[j:], open)
		switch state {
		case citeMore:
			f.pending = data[j:]
			return out.String()
		case citeYes:
			out.WriteString(f.rewrite(data[j:j+n], open, nums))
			i = j + n
		default:
			out.WriteString(open)
			i = j + len(open)
		}
	}
	return out.String()
}

// Flush returns the text held back at the end of the answer: an unclosed
// bracket is text.
func (f *CitationFilter) Flush() string {
	s := f.pending
	f.pending = ""
	return s
}

// Holding reports whether the filter holds back text: until it does not,
// a delta without brackets passes through Write unchanged.
func (f *CitationFilter) Holding() bool { return f.pending != "" }

// Cited returns the valid block numbers cited so far, in order of first
// citation.
func (f *CitationFilter) Cited() []int { return slices.Clone(f.cited) }

func (f *CitationFilter) rewrite(orig, open string, nums []int) string {
	var keep []string
	for _, n := range nums {
		if n >= 1 && n <= f.blocks {
			keep = append(keep, strconv.Itoa(n))
			if !slices.Contains(f.cited, n) {
				f.cited = append(f.cited, n)
			}
		}
	}
	switch len(keep) {
	case 0:
		return ""
	case len(nums):
		return orig
	}
	return open + strings.Join(keep, ", ") + closer[open]
}

var closer = map[string]string{"[": "]", "【": "】"}

// nextOpen finds the next opening bracket at or after i.
func nextOpen(s string, i int) (int, string) {
	a := strings.IndexByte(s[i:], '[')
	b := strings.Index(s[i:], "【")
	switch {
	case a < 0 && b < 0:
		return -1, ""
	case b < 0 || (a >= 0 && a < b):
		return i + a, "["
	}
	return i + b, "【"
}

const (
	citeNo = iota
	citeYes
	citeMore // s ends before it is decided
)

// parseCitation reads a citation at the start of s, which begins with
// open. It returns its length and numbers when it is one.
func parseCitation(s, open string) (int, []int, int) {
	var nums []int
	digits, num := 0, 0
	sep := true // a number may start here
	for i := len(open); i < len(s); {
		if i >= maxCitationBytes {
			return 0, nil, citeNo
		}
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if !sep && digits == 0 || digits == 3 {
				return 0, nil, citeNo
			}
			num, digits, sep = num*10+int(c-'0'), digits+1, false
			i++
			continue
		case digits > 0:
			nums, num, digits = append(nums, num), 0, 0
		}
		rest := s[i:]
		switch {
		case c == ',' || c == ' ':
			i++
		case strings.HasPrefix(rest, "，"), strings.HasPrefix(rest, "、"):
			i += len("，")
		case strings.HasPrefix(rest, closer[open]):
			if len(nums) == 0 {
				return 0, nil, citeNo
			}
			return i + len(closer[open]), nums, citeYes
		case len(rest) < len(closer[open]) && strings.HasPrefix(closer[open], rest):
			return 0, nil, citeMore // part of a multi-byte closer
		case len(rest) < 3 && (strings.HasPrefix("，", rest) || strings.HasPrefix("、", rest)):
			return 0, nil, citeMore
		default:
			return 0, nil, citeNo
		}
		sep = true
	}
	return 0, nil, citeMore
}
