package kb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Errors for files that cannot be ingested. Extract wraps them with what it
// found; callers branch on them to count and report.
var (
	ErrUnknownType = errors.New("unknown file type")
	ErrBinary      = errors.New("binary content in a text file")
	ErrTooLarge    = errors.New("over the size limit")
	ErrCorrupt     = errors.New("corrupt file")
	ErrZipBomb     = errors.New("archive expands too far (zip bomb?)")
	ErrUnsupported = errors.New("format not supported")
)

// Extracted is the text found in a file.
type Extracted struct {
	Format   string
	Title    string // from the file itself (first heading, <title>, DOCX core title); "" when none
	Sections []Section
}

// Format names the format of a file by its extension: markdown, text,
// html, docx or pdf; "" when unknown.
func Format(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".md", ".markdown":
		return "markdown"
	case ".txt", ".text":
		return "text"
	case ".html", ".htm", ".xhtml":
		return "html"
	case ".docx":
		return "docx"
	case ".pdf":
		return "pdf"
	}
	return ""
}

// Extract reads the text of a file in the given format (see Format).
// Errors wrap ErrUnknownType, ErrBinary, ErrCorrupt, ErrZipBomb,
// ErrTooLarge, ErrEncrypted or ErrUnsupported.
func Extract(format string, data []byte) (*Extracted, error) {
	return extract(context.Background(), format, data)
}

// extract is Extract, stopped when ctx is done (only PDF reading is long
// enough to need it).
func extract(ctx context.Context, format string, data []byte) (*Extracted, error) {
	var e *Extracted
	var err error
	switch format {
	case "markdown", "text", "html":
		var s string
		if s, err = decodeText(data); err != nil {
			return nil, err
		}
		switch format {
		case "markdown":
			e = extractMarkdown(s)
		case "text":
			e = &Extracted{Sections: []Section{{Text: s}}}
		case "html":
			e, err = extractHTML(s)
		}
	case "docx":
		e, err = extractDOCX(data)
	case "pdf":
		e, err = extractPDF(ctx, data)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, format)
	}
	if err != nil {
		return nil, err
	}
	e.Format = format
	return e, nil
}

// decodeText checks that data is UTF-8 text (an optional byte-order mark is
// dropped) with no NUL bytes or other control characters than white space.
func decodeText(data []byte) (string, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return "", fmt.Errorf("%w: NUL byte at offset %d", ErrBinary, i)
	}
	if !utf8.Valid(data) {
		return "", fmt.Errorf("%w: not valid UTF-8 (convert it to UTF-8 first)", ErrBinary)
	}
	ctl := 0
	for _, c := range data {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' {
			ctl++
		}
	}
	if ctl > len(data)/100+8 {
		return "", fmt.Errorf("%w: %d control characters", ErrBinary, ctl)
	}
	return string(data), nil
}

// extractMarkdown follows ATX headings (# to ######) into heading paths
// and drops the commonest inline markup.
func extractMarkdown(s string) *Extracted {
	e := &Extracted{}
	var path []string
	var body strings.Builder
	fence := false
	flush := func() {
		if t := strings.TrimSpace(body.String()); t != "" {
			e.Sections = append(e.Sections, Section{Heading: append([]string(nil), path...), Text: t})
		}
		body.Reset()
	}
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		trim := strings.TrimSpace(line)
		if strings.HasPrefix(trim, "```") || strings.HasPrefix(trim, "~~~") {
			fence = !fence
			continue
		}
		if !fence {
			if level, title, ok := atxHeading(trim); ok {
				flush()
				if level > len(path)+1 {
					level = len(path) + 1
				}
				path = append(path[:level-1], title)
				if e.Title == "" && level == 1 {
					e.Title = title
				}
				continue
			}
			line = stripInline(line)
		}
		body.WriteString(line)
		body.WriteByte('\n')
	}
	flush()
	return e
}

func atxHeading(line string) (int, string, bool) {
	level := 0
	for level < len(line) && line[level] == '#' {
		level++
	}
	if level == 0 || level > 6 || (level < len(line) && line[level] != ' ' && line[level] != '\t') {
		return 0, "", false
	}
	title := strings.TrimSpace(strings.TrimRight(strings.TrimSpace(line[level:]), "#"))
	if title == "" {
		return 0, "", false
	}
	return level, stripInline(title), true
}

// stripInline removes emphasis markers and turns [text](url) into text.
func stripInline(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '*', '_', '`':
			continue
		case '!':
			if i+1 < len(s) && s[i+1] == '[' {
				continue
			}
		case ']':
			if i+1 < len(s) && s[i+1] == '(' {
				if j := strings.IndexByte(s[i:], ')'); j > 0 {
					i += j
					continue
				}
			}
			continue
		case '[':
			continue
		}
		b.WriteByte(c)
	}
	out := strings.TrimLeft(b.String(), " >")
	return out
}
