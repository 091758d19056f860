package kb

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var pdfPages = [][]string{
	{"差旅管理制度", "员工出差须提前三个工作日在系统中提交", "申请，经部门负责人审批后方可预订机票。", "Employees book flights after approval."},
	{"第二章 住宿标准", "一线城市每晚不超过六百元。"},
}

func TestExtractPDFChinese(t *testing.T) {
	want := []Section{
		{Page: 1, Text: "差旅管理制度员工出差须提前三个工作日在系统中提交申请，经部门负责人审批后方可预订机票。\nEmployees book flights after approval."},
		{Page: 2, Text: "第二章 住宿标准一线城市每晚不超过六百元。"},
	}
	for _, c := range []struct {
		name string
		pdf  testPDF
	}{
		{"Identity-H with ToUnicode", testPDF{enc: identityToUnicode, pages: pdfPages, title: "差旅制度"}},
		{"Identity-H, FlateDecode", testPDF{enc: identityToUnicode, pages: pdfPages, compress: true, title: "差旅制度"}},
		{"UniGB-UCS2-H, no ToUnicode", testPDF{enc: uniGBUCS2, pages: pdfPages, title: "差旅制度"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := Extract("pdf", makePDF(t, c.pdf))
			if err != nil {
				t.Fatal(err)
			}
			if e.Title != "差旅制度" || e.Format != "pdf" {
				t.Errorf("title %q format %q", e.Title, e.Format)
			}
			if len(e.Sections) != len(want) {
				t.Fatalf("sections %+v", e.Sections)
			}
			for i, s := range e.Sections {
				if s.Page != want[i].Page || s.Text != want[i].Text {
					t.Errorf("section %d: page %d %q, want page %d %q", i, s.Page, s.Text, want[i].Page, want[i].Text)
				}
			}
		})
	}
}

// TestExtractPDFOutline: bookmarks become the pages' heading paths, and an
// outline that loops is walked a bounded number of times.
func TestExtractPDFOutline(t *testing.T) {
	pages := [][]string{{"封面"}, {"第一章正文。"}, {"第一章续。"}, {"第二节正文。"}, {"第二章正文。"}}
	marks := []testMark{
		{title: "第一章 总则", page: 1, kids: []testMark{{title: "第二节 范围", page: 3}}},
		{title: "第二章 报销", page: 4},
	}
	for _, loop := range []bool{false, true} {
		e, err := Extract("pdf", makePDF(t, testPDF{pages: pages, outline: marks, loop: loop}))
		if err != nil {
			t.Fatal(err)
		}
		got := sectionsText(e)
		want := "[]封面\n[第一章 总则]第一章正文。\n[第一章 总则]第一章续。\n[第一章 总则>第二节 范围]第二节正文。\n[第二章 报销]第二章正文。\n"
		if got != want {
			t.Errorf("loop %v: got %q, want %q", loop, got, want)
		}
	}
}

// TestExtractPDFReportLab reads a PDF written by a standard tool: Debian's
// python3-reportlab, with its built-in STSong-Light CID font (UniGB-UCS2-H,
// not embedded) and, when fonts-wqy-zenhei is installed, an embedded
// TrueType subset with a ToUnicode CMap.
func TestExtractPDFReportLab(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := runQuiet(py, "-c", "import reportlab"); err != nil {
		t.Skip("python3-reportlab is not installed (apt-get install python3-reportlab fonts-wqy-zenhei)")
	}
	dir := t.TempDir()
	script := `
import sys, os
from reportlab.pdfgen import canvas
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
pdfmetrics.registerFont(UnicodeCIDFont('STSong-Light'))
fonts = ['STSong-Light']
ttf = '/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc'
if os.path.exists(ttf):
    pdfmetrics.registerFont(TTFont('WQY', ttf))
    fonts.append('WQY')
for f in fonts:
    c = canvas.Canvas(os.path.join(sys.argv[1], f + '.pdf'))
    c.setTitle('报销制度')
    c.setFont(f, 12)
    c.drawString(72, 800, '第一页：差旅费用须在三十日内报销。')
    c.showPage()
    c.setFont(f, 12)
    c.drawString(72, 800, '第二页：发票抬头须为公司全称。')
    c.showPage()
    c.save()
print(len(fonts))
`
	if err := runQuiet(py, "-c", script, dir); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pdf"))
	if len(files) == 0 {
		t.Fatal("reportlab wrote no PDF")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Extract("pdf", data)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		got := sectionsText(e)
		want := "[]第一页：差旅费用须在三十日内报销。\n[]第二页：发票抬头须为公司全称。\n"
		if got != want || e.Title != "报销制度" || e.Sections[1].Page != 2 {
			t.Errorf("%s: %q title %q, want %q", filepath.Base(f), got, e.Title, want)
		}
		t.Logf("%s: %d bytes, read", filepath.Base(f), len(data))
	}
}

func runQuiet(name string, args ...string) error {
	out, err := execCommand(name, args...)
	if err != nil {
		return errors.Join(err, errors.New(strings.TrimSpace(string(out))))
	}
	return nil
}

func TestExtractPDFRefusals(t *testing.T) {
	good := makePDF(t, testPDF{pages: pdfPages})
	many := make([][]string, pdfMaxPages+1)
	for i := range many {
		many[i] = []string{"页"}
	}
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"truncated", good[:len(good)/3], ErrCorrupt},
		{"garbage after the header", append([]byte("%PDF-1.4\n"), bytes.Repeat([]byte("\xff\x00garbage "), 1000)...), ErrCorrupt},
		{"encrypted", makePDF(t, testPDF{pages: pdfPages, encrypt: true}), ErrEncrypted},
		{"too many pages", makePDF(t, testPDF{pages: many}), ErrTooLarge},
		{"no text layer", makePDF(t, testPDF{pages: [][]string{{}, {}}}), ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := Extract("pdf", c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v (%d sections), want %v", err, sectionsLen(e), c.want)
			}
			t.Log(err)
		})
	}
}

func sectionsLen(e *Extracted) int {
	if e == nil {
		return 0
	}
	return len(e.Sections)
}

// TestExtractPDFBomb: a content stream that inflates to 512 MiB is refused
// within the engine's memory cap; this process's own heap stays small.
func TestExtractPDFBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses 512 MiB")
	}
	start := time.Now()
	var z bytes.Buffer
	w, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	blank := bytes.Repeat([]byte("0 0 m "), 1<<16)
	for n := 0; n < 512<<20; n += len(blank) {
		w.Write(blank)
	}
	w.Close()
	t.Logf("compressed 512 MiB in %v", time.Since(start).Round(time.Millisecond))
	data := makePDF(t, testPDF{pages: [][]string{{"炸弹"}}, raw: z.Bytes(), filter: "FlateDecode"})
	if _, err := pdfPool(); err != nil { // compile before measuring
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resetPeakRSS()
	base := peakRSS()
	start = time.Now()
	e, err := Extract("pdf", data)
	runtime.ReadMemStats(&after)
	peak := peakRSS()
	t.Logf("%d-byte PDF: %v in %v, Go heap %d MiB -> %d MiB, RSS %d MiB, peak while reading %d MiB (cap %d MiB)", len(data), err,
		time.Since(start).Round(time.Millisecond), before.HeapInuse>>20, after.HeapInuse>>20, base>>20, peak>>20, pdfMaxMemory>>4)
	if base > 0 && peak-base > pdfMaxMemory<<16+64<<20 {
		t.Errorf("reading the bomb took %d MiB more than before, over the cap", (peak-base)>>20)
	}
	if err == nil {
		// PDFium may stop decoding at its own limit and find no text;
		// either way nothing of the bomb may come back.
		if n := sectionsLen(e); n != 0 {
			t.Fatalf("%d sections from a bomb", n)
		}
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestExtractPDFTimeout(t *testing.T) {
	pages := make([][]string, 3000)
	for i := range pages {
		pages[i] = []string{"员工出差须提前三个工作日提交申请。"}
	}
	data := makePDF(t, testPDF{pages: pages})
	if _, err := pdfPool(); err != nil { // compile outside the deadline
		t.Fatal(err)
	}
	old := pdfTimeout
	pdfTimeout = 20 * time.Millisecond
	defer func() { pdfTimeout = old }()
	_, err := Extract("pdf", data)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not read within") {
		t.Fatalf("got %v, want a timeout", err)
	}
	pdfTimeout = old
	// The engine is still usable after an instance was killed.
	if _, err := Extract("pdf", makePDF(t, testPDF{pages: pdfPages})); err != nil {
		t.Fatal(err)
	}
}

// TestExtractPDFCancel: a cancelled ingest stops inside a long PDF.
func TestExtractPDFCancel(t *testing.T) {
	pages := make([][]string, 3000)
	for i := range pages {
		pages[i] = []string{"员工出差须提前三个工作日提交申请。"}
	}
	data := makePDF(t, testPDF{pages: pages})
	if _, err := pdfPool(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err := extract(ctx, "pdf", data)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v after %v, want context.Canceled", err, time.Since(start))
	}
	if _, err := Extract("pdf", makePDF(t, testPDF{pages: pdfPages})); err != nil {
		t.Fatal(err)
	}
}

// TestIngestPDF: pages reach the chunks and the search results; a bad PDF
// beside good files leaves no rows and does not stop them.
func TestIngestPDF(t *testing.T) {
	k := openTest(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.pdf"), makePDF(t, testPDF{pages: pdfPages, title: "差旅制度"}), 0o600)
	os.WriteFile(filepath.Join(dir, "b.pdf"), makePDF(t, testPDF{pages: pdfPages, encrypt: true}), 0o600)
	os.WriteFile(filepath.Join(dir, "c.pdf"), []byte("%PDF-1.7\nnothing else"), 0o600)
	os.WriteFile(filepath.Join(dir, "d.md"), []byte("# 其他\n无关内容。"), 0o600)
	var ok, bad []string
	err := k.IngestFiles(context.Background(), []string{dir}, IngestOptions{Allow: []Principal{"role:hr"}, Class: Internal}, func(r FileResult) {
		if r.Err != nil {
			bad = append(bad, filepath.Base(r.Path)+": "+r.Err.Error())
		} else {
			ok = append(ok, filepath.Base(r.Path))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ok, ",") != "a.pdf,d.md" || len(bad) != 2 {
		t.Fatalf("stored %q, refused %q", ok, bad)
	}
	t.Log(bad)
	var docs int
	k.db.QueryRow(`SELECT count(*) FROM documents`).Scan(&docs)
	if docs != 2 {
		t.Errorf("%d documents, want 2 (no rows for the refused PDFs)", docs)
	}
	hits := search(t, k, "一线城市住宿标准", Caller{Principals: []Principal{"role:hr"}, Clearance: Internal})
	if len(hits) == 0 || hits[0].Page != 2 || hits[0].Title != "差旅制度" || !strings.Contains(hits[0].Text, "六百元") {
		t.Fatalf("hits %+v", hits)
	}
	if hits := search(t, k, "一线城市住宿标准", Caller{Principals: []Principal{"role:finance"}, Clearance: Secret}); len(hits) != 0 {
		t.Fatalf("another role found %+v", hits)
	}
}

func FuzzExtractPDF(f *testing.F) {
	good := makePDF(f, testPDF{pages: pdfPages, title: "标题"})
	f.Add(good)
	f.Add(makePDF(f, testPDF{enc: uniGBUCS2, pages: pdfPages, compress: true}))
	f.Add(makePDF(f, testPDF{pages: pdfPages, encrypt: true}))
	f.Add(makePDF(f, testPDF{pages: pdfPages, outline: []testMark{{title: "一", page: 0, kids: []testMark{{title: "二", page: 1}}}}, loop: true}))
	f.Add(good[:len(good)/2])
	f.Add([]byte("%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 1 0 R >> endobj trailer << /Root 1 0 R >>"))
	// Compile the engine before the first input: the fuzzer counts a
	// worker silent for 10 s as hung, and compiling takes about that long
	// on a busy machine.
	if _, err := pdfPool(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Extract("pdf", data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEncrypted) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		checkExtracted(t, e)
		for i, s := range e.Sections {
			if s.Page < 1 || (i > 0 && s.Page <= e.Sections[i-1].Page) {
				t.Fatalf("pages out of order: %d after %d", s.Page, e.Sections[max(i-1, 0)].Page)
			}
		}
	})
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux 4.0 and later).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns this process's peak resident set size (VmHWM), in bytes;
// 0 where /proc is missing.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}
