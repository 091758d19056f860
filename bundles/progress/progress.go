// Package progress reports the bytes moved by long bundle operations: a
// redrawn status block on a terminal (bytes, rate and ETA per file and
// overall), JSON lines for machines, or nothing at all.
//
// It must never write to stdout on its own: the caller chooses the writer,
// and results on stdout stay clean.
package progress

import (
	"encoding/json"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mode chooses the output of a Reporter.
type Mode int

// Output modes.
const (
	Quiet    Mode = iota // nothing (pipes, CI)
	Terminal             // a status block redrawn in place
	JSON                 // one JSON object per line
)

// Event is one JSON progress line.
type Event struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"` // start | progress | done | fail | note
	Op      string    `json:"op"`
	File    string    `json:"file,omitempty"`
	Bytes   int64     `json:"bytes"`
	Total   int64     `json:"total"` // -1 when unknown
	Rate    float64   `json:"bytesPerSecond,omitempty"`
	ETA     float64   `json:"etaSeconds,omitempty"`
	Message string    `json:"message,omitempty"`
}

// Reporter tracks many files at once. Its methods are safe for concurrent
// use and cheap enough to call per block.
type Reporter struct {
	mode     Mode
	w        io.Writer
	op       string
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	files   map[string]*entry
	start   time.Time
	total   int64
	done    int64
	last    time.Time
	drawn   int // lines of the last terminal block
	stopped bool
}

type entry struct {
	size, done int64
	start      time.Time
	lastEmit   time.Time
}

// New returns a reporter for op (e.g. "fetch", "pack") writing to w.
func New(w io.Writer, mode Mode, op string) *Reporter {
	if w == nil {
		mode = Quiet
	}
	return &Reporter{mode: mode, w: w, op: op, interval: 200 * time.Millisecond, now: time.Now, files: map[string]*entry{}}
}

// SetTotal announces the expected bytes of the whole operation (for the
// overall ETA); -1 when unknown.
func (r *Reporter) SetTotal(n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.total = n
	r.mu.Unlock()
}

// Start begins a file of size bytes (-1 when unknown), already having done
// bytes (a resumed download).
func (r *Reporter) Start(file string, size, done int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.now()
	if r.start.IsZero() {
		r.start = t
	}
	r.files[file] = &entry{size: size, done: done, start: t}
	r.done += done
	r.emit(Event{Event: "start", File: file, Bytes: done, Total: size})
	r.redraw(t, true)
}

// Add records n more bytes of file.
func (r *Reporter) Add(file string, n int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.files[file]
	if e == nil {
		return
	}
	e.done += n
	r.done += n
	t := r.now()
	if r.mode == JSON && t.Sub(e.lastEmit) >= time.Second {
		e.lastEmit = t
		rate, eta := rateETA(e.done, e.size, t.Sub(e.start))
		r.emit(Event{Event: "progress", File: file, Bytes: e.done, Total: e.size, Rate: rate, ETA: eta})
	}
	r.redraw(t, false)
}

// Rewind takes back n bytes of file (a retry that starts over).
func (r *Reporter) Rewind(file string, n int64) { r.Add(file, -n) }

// Done ends a file; a non-nil err marks it failed.
func (r *Reporter) Done(file string, err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.files[file]
	if e == nil {
		return
	}
	delete(r.files, file)
	ev := Event{Event: "done", File: file, Bytes: e.done, Total: e.size}
	ev.Rate, _ = rateETA(e.done, e.size, r.now().Sub(e.start))
	if err != nil {
		ev.Event, ev.Message = "fail", err.Error()
	}
	r.emit(ev)
	if r.mode == Terminal {
		r.clear()
		status := "done"
		if err != nil {
			status = "FAILED: " + err.Error()
		}
		fmt.Fprintf(r.w, "%s %s %s %s\n", r.op, file, space.Format(e.done), status)
		r.redraw(r.now(), true)
	}
}

// Note prints a one-line message (a warning, a resumed download).
func (r *Reporter) Note(format string, args ...any) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	switch r.mode {
	case JSON:
		r.emit(Event{Event: "note", Message: msg})
	case Terminal:
		r.clear()
		fmt.Fprintln(r.w, msg)
		r.redraw(r.now(), true)
	}
}

// Stop erases the status block.
func (r *Reporter) Stop() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
	r.stopped = true
}

func (r *Reporter) emit(ev Event) {
	if r.mode != JSON {
		return
	}
	ev.Time = r.now().UTC()
	ev.Op = r.op
	b, _ := json.Marshal(ev)
	r.w.Write(append(b, '\n'))
}

func (r *Reporter) clear() {
	if r.mode != Terminal || r.drawn == 0 {
		return
	}
	// Move up over the block and erase to the end of the screen.
	fmt.Fprintf(r.w, "\x1b[%dA\r\x1b[J", r.drawn)
	r.drawn = 0
}

func (r *Reporter) redraw(t time.Time, force bool) {
	if r.mode != Terminal || r.stopped || (!force && t.Sub(r.last) < r.interval) {
		return
	}
	r.last = t
	var b strings.Builder
	names := make([]string, 0, len(r.files))
	for n := range r.files {
		names = append(names, n)
	}
	sort.Strings(names)
	lines := 0
	for _, n := range names {
		e := r.files[n]
		fmt.Fprintf(&b, "  %s %s\n", n, line(e.done, e.size, t.Sub(e.start)))
		lines++
	}
	if len(names) > 0 {
		fmt.Fprintf(&b, "%s total %s\n", r.op, line(r.done, r.total, t.Sub(r.start)))
		lines++
	}
	r.clear()
	io.WriteString(r.w, b.String())
	r.drawn = lines
}

func line(done, size int64, elapsed time.Duration) string {
	rate, eta := rateETA(done, size, elapsed)
	s := space.Format(done)
	if size > 0 {
		s += fmt.Sprintf(" / %s (%.0f%%)", space.Format(size), 100*float64(done)/float64(size))
	}
	s += fmt.Sprintf(" %s/s", space.Format(int64(rate)))
	if eta > 0 {
		s += " ETA " + (time.Duration(eta) * time.Second).String()
	}
	return s
}

func rateETA(done, size int64, elapsed time.Duration) (rate, eta float64) {
	if elapsed <= 0 {
		return 0, 0
	}
	rate = float64(done) / elapsed.Seconds()
	if size > 0 && rate > 0 && done < size {
		eta = float64(int64(float64(size-done) / rate))
	}
	return rate, eta
}
