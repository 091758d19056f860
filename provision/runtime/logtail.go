package runtime

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// logTail copies a server's output to w and keeps its last lines for error
// messages.
type logTail struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte
	lines   []string
	keep    int
}

func newLogTail(w io.Writer, keep int) *logTail { return &logTail{w: w, keep: keep} }

func (t *logTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		if _, err := t.w.Write(p); err != nil {
			t.w = nil // keep the server running even when its log cannot be written
		}
	}
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		t.add(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > 4096 {
		t.add(string(t.partial))
		t.partial = t.partial[:0]
	}
	return len(p), nil
}

func (t *logTail) add(line string) {
	line = strings.TrimRight(ansi.ReplaceAllString(line, ""), "\r ")
	if line == "" {
		return
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.keep {
		t.lines = t.lines[len(t.lines)-t.keep:]
	}
}

// swap makes w the log's destination from the next write on.
func (t *logTail) swap(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.w = w
}

// String returns the kept lines, the unfinished one included.
func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string(nil), t.lines...)
	if len(t.partial) > 0 {
		lines = append(lines, string(t.partial))
	}
	return strings.Join(lines, "\n")
}

// lastLines returns the last n non-empty lines of s.
func lastLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}
