package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// progressBar draws "label  done/total  rate  ETA" on a terminal, at most
// five times a second. On anything but a terminal it draws nothing.
type progressBar struct {
	w       io.Writer
	label   string
	total   int64
	done    atomic.Int64
	start   time.Time
	mu      sync.Mutex
	last    time.Time
	enabled bool
}

func newProgress(w io.Writer, label string, total int64) *progressBar {
	return &progressBar{w: w, label: label, total: total, start: time.Now(), enabled: isTerminal(w)}
}

// Add records n more bytes; it is safe for concurrent use.
func (p *progressBar) Add(n int64) {
	d := p.done.Add(n)
	if !p.enabled {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.last) < 200*time.Millisecond && d < p.total {
		return
	}
	p.last = now
	p.draw(d, now)
}

func (p *progressBar) draw(d int64, now time.Time) {
	el := now.Sub(p.start).Seconds()
	rate := float64(d) / max(el, 1e-3)
	eta := "--"
	if rate > 0 && p.total > d {
		eta = time.Duration(float64(p.total-d) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\033[K%s  %s / %s  %s/s  ETA %s", p.label, humanBytes(d), humanBytes(p.total), humanBytes(int64(rate)), eta)
}

// Done ends the progress line.
func (p *progressBar) Done() {
	if p.enabled {
		p.mu.Lock()
		p.draw(p.done.Load(), time.Now())
		fmt.Fprintln(p.w)
		p.mu.Unlock()
	}
}
