package kb

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"strings"
	"testing"
)

// The tests write their PDFs object by object, so that what each one
// exercises (which font encoding, which damage) is visible here rather than
// hidden in a binary fixture.

// pdfEncoding says how a generated PDF encodes its text.
type pdfEncoding int

const (
	// identityToUnicode: a Type0 font with Encoding Identity-H whose CIDs
	// are numbered in order of first use (so they are not Unicode), and a
	// ToUnicode CMap that maps them back: what LibreOffice and Word write.
	identityToUnicode pdfEncoding = iota
	// uniGBUCS2: a Type0 font with the predefined CMap UniGB-UCS2-H over
	// Adobe-GB1 and no ToUnicode: the codes are UCS-2, and only a reader
	// that knows the predefined CMaps gets the text.
	uniGBUCS2
)

// testPDF describes a PDF for makePDF.
type testPDF struct {
	enc      pdfEncoding
	pages    [][]string // lines of each page
	title    string     // Info dictionary title (ASCII or UTF-16BE written as hex)
	compress bool       // FlateDecode the content streams
	encrypt  bool       // an Encrypt dictionary whose user password is not empty
	// raw, when set, is the content stream of every page instead of
	// the text (already encoded as filter says).
	raw    []byte
	filter string
	// outline is the document's bookmarks; loop makes the last top-level
	// entry's /Next point back at the first.
	outline []testMark
	loop    bool
}

// testMark is a bookmark pointing at a page (0-based).
type testMark struct {
	title string
	page  int
	kids  []testMark
}

// pdfText writes s as a PDF text string in UTF-16BE.
func pdfText(s string) string {
	t := "<FEFF"
	for _, r := range s {
		t += fmt.Sprintf("%04X", r)
	}
	return t + ">"
}

func makePDF(tb testing.TB, p testPDF) []byte {
	tb.Helper()
	var objs []string
	add := func(s string) int { objs = append(objs, s); return len(objs) }
	catalog, pagesObj := add(""), add("")
	cid := map[rune]int{}
	var order []rune
	code := func(r rune) int {
		if p.enc == uniGBUCS2 {
			return int(r)
		}
		if c, ok := cid[r]; ok {
			return c
		}
		cid[r] = len(cid) + 3
		order = append(order, r)
		return cid[r]
	}
	stream := func(dict string, data []byte) string {
		return fmt.Sprintf("<< %s /Length %d >>\nstream\n%s\nendstream", dict, len(data), data)
	}
	var contents [][]byte
	for _, lines := range p.pages {
		var b strings.Builder
		b.WriteString("BT /F1 12 Tf 72 800 Td 16 TL\n")
		for _, l := range lines {
			b.WriteString("<")
			for _, r := range l {
				fmt.Fprintf(&b, "%04X", code(r))
			}
			b.WriteString("> Tj T*\n")
		}
		b.WriteString("ET")
		contents = append(contents, []byte(b.String()))
	}
	fd := add("<< /Type /FontDescriptor /FontName /STSong-Light /Flags 4 /FontBBox [0 -200 1000 900] /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>")
	var font int
	if p.enc == uniGBUCS2 {
		d := add(fmt.Sprintf("<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor %d 0 R /DW 1000 >>", fd))
		font = add(fmt.Sprintf("<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light-UniGB-UCS2-H /Encoding /UniGB-UCS2-H /DescendantFonts [%d 0 R] >>", d))
	} else {
		var cm strings.Builder
		cm.WriteString("/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n1 begincodespacerange <0000> <FFFF> endcodespacerange\n")
		for len(order) > 0 {
			n := min(len(order), 100) // at most 100 entries per block
			fmt.Fprintf(&cm, "%d beginbfchar\n", n)
			for _, r := range order[:n] {
				fmt.Fprintf(&cm, "<%04X> <%04X>\n", cid[r], r)
			}
			cm.WriteString("endbfchar\n")
			order = order[n:]
		}
		cm.WriteString("endcmap CMapName currentdict /CMap defineresource pop end end")
		tu := add(stream("", []byte(cm.String())))
		d := add(fmt.Sprintf("<< /Type /Font /Subtype /CIDFontType2 /BaseFont /STSong /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor %d 0 R /DW 1000 /CIDToGIDMap /Identity >>", fd))
		font = add(fmt.Sprintf("<< /Type /Font /Subtype /Type0 /BaseFont /STSong /Encoding /Identity-H /DescendantFonts [%d 0 R] /ToUnicode %d 0 R >>", d, tu))
	}
	var kids []string
	shared := 0
	for _, c := range contents {
		var co int
		switch {
		case p.raw != nil && shared != 0:
			co = shared
		case p.raw != nil:
			co = add(stream("/Filter /"+p.filter, p.raw))
			shared = co
		case p.compress:
			var z bytes.Buffer
			w := zlib.NewWriter(&z)
			w.Write(c)
			w.Close()
			co = add(stream("/Filter /FlateDecode", z.Bytes()))
		default:
			co = add(stream("", c))
		}
		pg := add(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>", pagesObj, font, co))
		kids = append(kids, fmt.Sprintf("%d 0 R", pg))
	}
	outlines := ""
	if len(p.outline) > 0 {
		root := add("")
		var build func(parent int, marks []testMark) (first, last int)
		build = func(parent int, marks []testMark) (int, int) {
			nums := make([]int, len(marks))
			for i := range marks {
				nums[i] = add("")
			}
			for i, m := range marks {
				d := fmt.Sprintf("<< /Title %s /Parent %d 0 R /Dest [%s /XYZ 0 800 0]", pdfText(m.title), parent, kids[m.page])
				if i > 0 {
					d += fmt.Sprintf(" /Prev %d 0 R", nums[i-1])
				}
				if i+1 < len(marks) {
					d += fmt.Sprintf(" /Next %d 0 R", nums[i+1])
				} else if p.loop && parent == root {
					d += fmt.Sprintf(" /Next %d 0 R", nums[0])
				}
				if len(m.kids) > 0 {
					f, l := build(nums[i], m.kids)
					d += fmt.Sprintf(" /First %d 0 R /Last %d 0 R /Count %d", f, l, len(m.kids))
				}
				objs[nums[i]-1] = d + " >>"
			}
			return nums[0], nums[len(nums)-1]
		}
		f, l := build(root, p.outline)
		objs[root-1] = fmt.Sprintf("<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count %d >>", f, l, len(p.outline))
		outlines = fmt.Sprintf(" /Outlines %d 0 R", root)
	}
	objs[catalog-1] = fmt.Sprintf("<< /Type /Catalog /Pages %d 0 R%s >>", pagesObj, outlines)
	objs[pagesObj-1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), len(kids))
	trailer := ""
	if p.title != "" {
		trailer += fmt.Sprintf(" /Info %d 0 R", add("<< /Title "+pdfText(p.title)+" >>"))
	}
	if p.encrypt {
		// Standard security handler, revision 2: O and U that no
		// password, the empty one included, produces.
		o, u := strings.Repeat("A1", 32), strings.Repeat("5B", 32)
		trailer += fmt.Sprintf(" /Encrypt %d 0 R /ID [<00112233445566778899AABBCCDDEEFF> <00112233445566778899AABBCCDDEEFF>]",
			add(fmt.Sprintf("<< /Filter /Standard /V 1 /R 2 /Length 40 /P -44 /O <%s> /U <%s> >>", o, u)))
	}
	var out bytes.Buffer
	out.WriteString("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
	offs := make([]int, len(objs))
	for i, o := range objs {
		offs[i] = out.Len()
		fmt.Fprintf(&out, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	x := out.Len()
	fmt.Fprintf(&out, "xref\n0 %d\n0000000000 65535 f \n", len(objs)+1)
	for _, o := range offs {
		fmt.Fprintf(&out, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&out, "trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n", len(objs)+1, catalog, trailer, x)
	return out.Bytes()
}
