package kb

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits on a DOCX archive, so that a zip bomb costs a bounded amount of
// memory and time before it is refused.
const (
	docxMaxEntries = 10000
	docxMaxXML     = 64 << 20 // uncompressed word/document.xml
	docxMaxRatio   = 200      // uncompressed / compressed
)

// extractDOCX reads word/document.xml: paragraphs, with Heading N and Title
// styles as heading paths, and without hidden runs (w:vanish, w:webHidden,
// white text, text of 1 pt or less).
func extractDOCX(data []byte) (*Extracted, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: DOCX is not a zip archive: %v", ErrCorrupt, err)
	}
	if len(zr.File) > docxMaxEntries {
		return nil, fmt.Errorf("%w: %d entries", ErrZipBomb, len(zr.File))
	}
	var body, core *zip.File
	for _, f := range zr.File {
		switch f.Name {
		case "word/document.xml":
			body = f
		case "docProps/core.xml":
			core = f
		}
	}
	if body == nil {
		return nil, fmt.Errorf("%w: DOCX has no word/document.xml", ErrCorrupt)
	}
	xmlData, err := readZipEntry(body)
	if err != nil {
		return nil, err
	}
	e, err := parseDocumentXML(xmlData)
	if err != nil {
		return nil, err
	}
	if core != nil {
		if b, err := readZipEntry(core); err == nil {
			var cp struct {
				Title string `xml:"title"`
			}
			if xml.Unmarshal(b, &cp) == nil && strings.TrimSpace(cp.Title) != "" {
				e.Title = strings.TrimSpace(cp.Title)
			}
		}
	}
	return e, nil
}

// readZipEntry reads f whole, refusing sizes and ratios past the limits
// whatever the header claims.
func readZipEntry(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > docxMaxXML {
		return nil, fmt.Errorf("%w: %s claims %d bytes", ErrZipBomb, f.Name, f.UncompressedSize64)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: DOCX %s: %v", ErrCorrupt, f.Name, err)
	}
	defer rc.Close()
	limit := int64(docxMaxXML)
	if c := int64(f.CompressedSize64); c > 0 && c*docxMaxRatio < limit {
		limit = max(c*docxMaxRatio, 1<<20)
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: DOCX %s: %v", ErrCorrupt, f.Name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s expands past %d bytes", ErrZipBomb, f.Name, limit)
	}
	return b, nil
}

func parseDocumentXML(data []byte) (*Extracted, error) {
	const w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
	d := xml.NewDecoder(bytes.NewReader(data))
	e := &Extracted{}
	var path []string
	var body, para strings.Builder
	level := 0 // heading level of the current paragraph
	inText, hidden, inRPr := false, false, false
	flush := func() {
		if t := strings.TrimSpace(body.String()); t != "" {
			e.Sections = append(e.Sections, Section{Heading: append([]string(nil), path...), Text: t})
		}
		body.Reset()
	}
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: DOCX document.xml: %v", ErrCorrupt, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth++; depth > 256 {
				return nil, fmt.Errorf("%w: DOCX document.xml nests deeper than 256", ErrCorrupt)
			}
			if t.Name.Space != w {
				continue
			}
			switch t.Name.Local {
			case "p":
				para.Reset()
				level = 0
			case "r":
				hidden = false
			case "rPr":
				inRPr = true
			case "vanish", "specVanish", "webHidden":
				if inRPr && attrVal(t, "val") != "0" && attrVal(t, "val") != "false" {
					hidden = true
				}
			case "color":
				// White text on Word's default white page.
				if v := strings.ToUpper(attrVal(t, "val")); inRPr && (v == "FFFFFF" || v == "FFFFFE") {
					hidden = true
				}
			case "sz":
				// Text at 1 pt or less (sz is in half points).
				if n, err := strconv.Atoi(attrVal(t, "val")); inRPr && err == nil && n <= 2 {
					hidden = true
				}
			case "pStyle":
				level = styleLevel(attrVal(t, "val"))
			case "t":
				inText = true
			case "tab":
				if !inRPr {
					para.WriteByte('\t')
				}
			case "br", "cr":
				para.WriteByte('\n')
			}
		case xml.EndElement:
			depth--
			if t.Name.Space != w {
				continue
			}
			switch t.Name.Local {
			case "t":
				inText = false
			case "rPr":
				inRPr = false
			case "p":
				text := strings.TrimSpace(para.String())
				if level > 0 && text != "" {
					flush()
					if level > len(path)+1 {
						level = len(path) + 1
					}
					path = append(path[:level-1], text)
					if e.Title == "" && level == 1 {
						e.Title = text
					}
				} else if text != "" {
					body.WriteString(text)
					body.WriteByte('\n')
				}
			}
		case xml.CharData:
			if inText && !hidden {
				para.Write(t)
			}
		}
	}
	flush()
	return e, nil
}

func attrVal(t xml.StartElement, local string) string {
	for _, a := range t.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// styleLevel maps a paragraph style ID to a heading level: Title is 1,
// Heading1..Heading6 (and the localised numeric IDs 1..6) are 1..6.
func styleLevel(id string) int {
	s := strings.ToLower(strings.ReplaceAll(id, " ", ""))
	if s == "title" {
		return 1
	}
	s = strings.TrimPrefix(s, "heading")
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 6 {
		return n
	}
	return 0
}
