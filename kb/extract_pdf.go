package kb

// PDF text comes from PDFium, the engine Chrome uses to show PDFs, compiled
// to WebAssembly (github.com/klippa-app/go-pdfium) and run by wazero, a
// WebAssembly runtime in pure Go: no cgo, no helper process.
//
// Why PDFium rather than a Go parser: the Go candidates read Chinese PDFs
// badly or not at all. github.com/ledongthuc/pdf (and rsc.io/pdf, which it
// forks) garble some CID fonts (ledongthuc/pdf issue #55) and know none of
// the predefined CJK CMaps (UniGB-UCS2-H, GBK-EUC-H, UniCNS-UCS2-H …);
// pdfcpu parses objects well but extracts no text, and decodes every stream
// whole, so a decompression bomb costs what it expands to. PDFium maps text
// to Unicode as a viewer does (ToUnicode CMaps, the predefined CMaps, and
// the Adobe-GB1/CNS1/Japan1/Korea1 CID tables when a font has no ToUnicode),
// repairs damaged cross-reference tables, opens files encrypted with an
// empty user password, and has been fuzzed for years as part of Chrome.
//
// Why WebAssembly: a parser of hostile files should run in a box. Each PDF
// gets a fresh instance whose only memory is its own linear memory, capped
// at pdfMaxMemory; it sees no file system (an empty FSConfig) and is killed
// at pdfTimeout. A bomb in a stream, a page tree that loops, or a bug in
// PDFium's C++ ends as an error for that file, never as a crash or an
// unbounded allocation of the appliance.
//
// The price: about 14 MB more binary (the 5.8 MB module, its bindings and
// wazero: the appliance build went from 39 to 52 MB), and compiling it the first
// time a process reads a PDF (about 5 s of CPU on a small host; once per
// process, not per file).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/klippa-app/go-pdfium"
	pdfiumerr "github.com/klippa-app/go-pdfium/errors"
	"github.com/klippa-app/go-pdfium/references"
	"github.com/klippa-app/go-pdfium/requests"
	"github.com/klippa-app/go-pdfium/webassembly"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// Limits on one PDF.
const (
	pdfMaxPages = 5000
	// pdfMaxText bounds the extracted text of one file, in characters.
	pdfMaxText = 16 << 20
	// pdfMaxMemory is the WebAssembly memory one file may use, the file
	// itself and its decoded streams included, in 64 KiB pages (256 MiB).
	pdfMaxMemory = 256 << 20 >> 16
)

// pdfTimeout bounds the time one file may take (a variable for tests).
var pdfTimeout = 2 * time.Minute

// ErrEncrypted is returned (wrapped) for a PDF that needs a password.
var ErrEncrypted = errors.New("encrypted: a password is needed to read it")

// pdfMu lets one PDF be read at a time in a process: ingest reads files
// one by one anyway, and it makes releasing a killed instance's memory
// safe (see releasePDFMemory).
var pdfMu sync.Mutex

var pdfEngine struct {
	once sync.Once
	pool pdfium.Pool
	err  error
}

// pdfPool returns the process's PDFium pool, compiling the module the first
// time it is asked for.
func pdfPool() (pdfium.Pool, error) {
	pdfEngine.once.Do(func() {
		rc := wazero.NewRuntimeConfig().
			// PDFium's setjmp/longjmp is built on WebAssembly exceptions.
			WithCoreFeatures(api.CoreFeaturesV2 | experimental.CoreFeaturesExceptionHandling).
			WithMemoryLimitPages(pdfMaxMemory).
			// Kill (at the deadline) interrupts a call in flight.
			WithCloseOnContextDone(true)
		pdfEngine.pool, pdfEngine.err = webassembly.Init(webassembly.Config{
			// Every instance's memory comes from pdfMemory (see pdfmem_linux.go).
			Context: experimental.WithMemoryAllocator(context.Background(), pdfMemory),
			MinIdle: 0, MaxIdle: 1, MaxTotal: 4,
			RuntimeConfig: rc,
			FSConfig:      wazero.NewFSConfig(), // no file system at all
			Stdout:        io.Discard,
			Stderr:        io.Discard,
		})
	})
	return pdfEngine.pool, pdfEngine.err
}

// extractPDF reads the text of each page into a section of its own, with
// its page number. Errors wrap ErrCorrupt (not a PDF, damaged beyond
// repair, out of memory or time), ErrEncrypted, ErrTooLarge (pages, text)
// or ErrUnsupported (no text at all, as in a scan; the engine did not
// start).
func extractPDF(ctx context.Context, data []byte) (*Extracted, error) {
	if !strings.HasPrefix(strings.TrimLeft(string(data[:min(len(data), 1024)]), "\x00\t\n\f\r "), "%PDF-") {
		return nil, fmt.Errorf("%w: PDF: no %%PDF- header", ErrCorrupt)
	}
	pdfMu.Lock()
	defer pdfMu.Unlock()
	defer releasePDFMemory()
	pool, err := pdfPool()
	if err != nil {
		return nil, fmt.Errorf("%w: PDF engine: %s", ErrUnsupported, firstLine(err.Error()))
	}
	inst, err := pool.GetInstance(pdfTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: PDF engine: %v", ErrUnsupported, err)
	}
	// The instance is killed at the deadline or when ctx is done,
	// whichever comes first, and closed normally otherwise.
	var killed sync.Once
	var expired, cancelled atomic.Bool
	kill := func(flag *atomic.Bool) func() {
		return func() { killed.Do(func() { flag.Store(true); inst.Kill() }) }
	}
	timer := time.AfterFunc(pdfTimeout, kill(&expired))
	stop := context.AfterFunc(ctx, kill(&cancelled))
	e, err := readPDF(inst, data)
	timer.Stop()
	stop()
	killed.Do(func() { inst.Close() }) // a no-op when it was killed
	switch {
	case cancelled.Load():
		return nil, fmt.Errorf("PDF: %w", context.Cause(ctx))
	case expired.Load():
		return nil, fmt.Errorf("%w: PDF: not read within %v", ErrCorrupt, pdfTimeout)
	}
	return e, err
}

// readPDF does extractPDF's work on one instance. Any panic of the binding
// (a call on a killed instance) becomes an error.
func readPDF(inst pdfium.Pdfium, data []byte) (e *Extracted, err error) {
	defer func() {
		if r := recover(); r != nil {
			e, err = nil, fmt.Errorf("%w: PDF: engine stopped: %s", ErrCorrupt, firstLine(fmt.Sprint(r)))
		}
	}()
	doc, err := inst.OpenDocument(&requests.OpenDocument{File: &data})
	if err != nil {
		return nil, pdfError("open", err)
	}
	defer inst.FPDF_CloseDocument(&requests.FPDF_CloseDocument{Document: doc.Document})
	pc, err := inst.FPDF_GetPageCount(&requests.FPDF_GetPageCount{Document: doc.Document})
	if err != nil {
		return nil, pdfError("count pages", err)
	}
	if pc.PageCount > pdfMaxPages {
		return nil, fmt.Errorf("%w: PDF of %d pages, limit %d", ErrTooLarge, pc.PageCount, pdfMaxPages)
	}
	e = &Extracted{}
	if t, err := inst.FPDF_GetMetaText(&requests.FPDF_GetMetaText{Document: doc.Document, Tag: "Title"}); err == nil {
		// One line, at most 300 characters: the field is free text.
		title := []rune(strings.Join(strings.Fields(cleanPDFText(t.Value)), " "))
		e.Title = string(title[:min(len(title), 300)])
	}
	marks := outline(inst, doc.Document)
	total := 0
	for i := range pc.PageCount {
		text, err := pageText(inst, doc.Document, i, pdfMaxText-total)
		if err != nil {
			return nil, err
		}
		total += utf8.RuneCountInString(text)
		if text = unwrapLines(cleanPDFText(text)); strings.TrimSpace(text) != "" {
			e.Sections = append(e.Sections, Section{Page: i + 1, Heading: headingAt(marks, i), Text: text})
		}
	}
	if len(e.Sections) == 0 {
		return nil, fmt.Errorf("%w: PDF of %d pages has no text layer (scanned? run OCR on it first)", ErrUnsupported, pc.PageCount)
	}
	return e, nil
}

// Bounds on the outline (bookmarks) read for heading paths: an outline
// whose entries loop back would otherwise be walked for ever.
const (
	pdfMaxMarks = 2000
	pdfMaxDepth = 6
)

// mark is an outline entry: its path of titles and the page (0-based) it
// points at.
type mark struct {
	path []string
	page int
}

// outline reads the document's bookmarks in order, at most pdfMaxMarks of
// them and pdfMaxDepth deep. Entries without a page in the document are
// skipped; a damaged outline yields what was read before the damage.
func outline(inst pdfium.Pdfium, doc references.FPDF_DOCUMENT) []mark {
	var marks []mark
	seen := 0
	var walk func(parent *references.FPDF_BOOKMARK, path []string)
	walk = func(parent *references.FPDF_BOOKMARK, path []string) {
		if len(path) >= pdfMaxDepth {
			return
		}
		first, err := inst.FPDFBookmark_GetFirstChild(&requests.FPDFBookmark_GetFirstChild{Document: doc, Bookmark: parent})
		if err != nil {
			return
		}
		for b := first.Bookmark; b != nil && seen < pdfMaxMarks; {
			seen++
			title, err := inst.FPDFBookmark_GetTitle(&requests.FPDFBookmark_GetTitle{Bookmark: *b})
			if err != nil {
				return
			}
			t := strings.Join(strings.Fields(cleanPDFText(title.Title)), " ")
			here := append(slices.Clip(path), t)
			if d, err := inst.FPDFBookmark_GetDest(&requests.FPDFBookmark_GetDest{Document: doc, Bookmark: *b}); err == nil && d.Dest != nil && t != "" {
				if pi, err := inst.FPDFDest_GetDestPageIndex(&requests.FPDFDest_GetDestPageIndex{Document: doc, Dest: *d.Dest}); err == nil && pi.Index >= 0 {
					marks = append(marks, mark{here, pi.Index})
				}
			}
			walk(b, here)
			next, err := inst.FPDFBookmark_GetNextSibling(&requests.FPDFBookmark_GetNextSibling{Document: doc, Bookmark: *b})
			if err != nil {
				return
			}
			b = next.Bookmark
		}
	}
	walk(nil, nil)
	return marks
}

// headingAt is the heading path of page i: that of the first outline entry
// pointing at the page, else that of the last entry before it in document
// order among those pointing at earlier pages. (The outline names where a
// section starts, not where on its page, so a page whose text spans two
// sections is filed under the one that starts on it.)
func headingAt(marks []mark, i int) []string {
	var best []string
	bestPage := -1
	for _, m := range marks {
		switch {
		case m.page == i:
			return m.path
		case m.page < i && m.page >= bestPage:
			best, bestPage = m.path, m.page
		}
	}
	return best
}

// pageText returns the text of page i (0-based), refusing more than budget
// characters.
func pageText(inst pdfium.Pdfium, doc references.FPDF_DOCUMENT, i, budget int) (string, error) {
	page, err := inst.FPDF_LoadPage(&requests.FPDF_LoadPage{Document: doc, Index: i})
	if err != nil {
		return "", pdfError(fmt.Sprintf("page %d", i+1), err)
	}
	defer inst.FPDF_ClosePage(&requests.FPDF_ClosePage{Page: page.Page})
	tp, err := inst.FPDFText_LoadPage(&requests.FPDFText_LoadPage{Page: requests.Page{ByReference: &page.Page}})
	if err != nil {
		return "", pdfError(fmt.Sprintf("page %d text", i+1), err)
	}
	defer inst.FPDFText_ClosePage(&requests.FPDFText_ClosePage{TextPage: tp.TextPage})
	n, err := inst.FPDFText_CountChars(&requests.FPDFText_CountChars{TextPage: tp.TextPage})
	if err != nil {
		return "", pdfError(fmt.Sprintf("page %d text", i+1), err)
	}
	if n.Count > budget {
		return "", fmt.Errorf("%w: PDF text passes %d characters at page %d", ErrTooLarge, pdfMaxText, i+1)
	}
	if n.Count <= 0 {
		return "", nil
	}
	t, err := inst.FPDFText_GetText(&requests.FPDFText_GetText{TextPage: tp.TextPage, StartIndex: 0, Count: n.Count})
	if err != nil {
		return "", pdfError(fmt.Sprintf("page %d text", i+1), err)
	}
	return t.Text, nil
}

// pdfError turns a PDFium error into one of the package's.
func pdfError(op string, err error) error {
	switch {
	case errors.Is(err, pdfiumerr.ErrPassword), errors.Is(err, pdfiumerr.ErrSecurity):
		return fmt.Errorf("PDF: %w", ErrEncrypted)
	case errors.Is(err, pdfiumerr.ErrFormat), errors.Is(err, pdfiumerr.ErrFile):
		return fmt.Errorf("%w: PDF: not a readable PDF (%s: %v)", ErrCorrupt, op, err)
	}
	msg := firstLine(err.Error())
	if strings.Contains(msg, "wasm error") {
		return fmt.Errorf("%w: PDF: %s: the engine stopped (%s), as it does at its %d MiB memory cap", ErrCorrupt, op, msg, pdfMaxMemory>>4)
	}
	return fmt.Errorf("%w: PDF: %s: %s", ErrCorrupt, op, msg)
}

// firstLine drops what follows a message's first line (the engine appends
// a WebAssembly stack trace).
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// cleanPDFText drops what a text layer holds besides text: NULs and other
// control characters (but line breaks and tabs), noncharacters, and the
// private-use code points of unmapped glyphs.
func cleanPDFText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == '\r':
			return -1
		case unicode.IsControl(r), r == utf8.RuneError, r == 0xfffe, r == 0xffff, unicode.Is(unicode.Co, r):
			return -1
		}
		return r
	}, s)
}

// unwrapLines joins the lines a PDF's layout broke a paragraph into: a line
// break stays only after a sentence end (so that chunking still sees
// sentences) and is dropped elsewhere, with a space when Latin text meets
// Latin text.
func unwrapLines(s string) string {
	lines := strings.Split(s, "\n")
	var b strings.Builder
	b.Grow(len(s))
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			prev := strings.TrimRight(lines[i-1], " \t")
			last, _ := utf8.DecodeLastRuneInString(b.String())
			first, _ := utf8.DecodeRuneInString(l)
			switch {
			case prev == "" || strings.ContainsRune("。！？!?.；;:：」』”\"）)", last):
				b.WriteByte('\n')
			case last < utf8.RuneSelf && first < utf8.RuneSelf:
				b.WriteByte(' ')
			}
		}
		b.WriteString(l)
	}
	return b.String()
}
