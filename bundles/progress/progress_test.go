package progress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestJSONEvents(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, JSON, "fetch")
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = c.now
	r.SetTotal(300)
	r.Start("a", 200, 0)
	c.t = c.t.Add(2 * time.Second)
	r.Add("a", 100)
	r.Done("a", nil)
	r.Start("b", 100, 0)
	r.Done("b", errors.New("boom"))
	r.Note("hello %d", 1)
	var events []Event
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		events = append(events, e)
	}
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Event)
	}
	if got := strings.Join(kinds, ","); got != "start,progress,done,start,fail,note" {
		t.Fatalf("events %s", got)
	}
	p := events[1]
	if p.Bytes != 100 || p.Total != 200 || p.Rate != 50 || p.ETA != 2 || p.Op != "fetch" {
		t.Fatalf("progress event %+v", p)
	}
	if events[4].Message != "boom" || events[5].Message != "hello 1" {
		t.Fatalf("fail/note: %+v %+v", events[4], events[5])
	}
}

func TestQuietWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, Quiet, "x")
	r.Start("a", 10, 0)
	r.Add("a", 10)
	r.Note("n")
	r.Done("a", nil)
	r.Stop()
	if buf.Len() != 0 {
		t.Fatalf("quiet mode wrote %q", buf.String())
	}
	var nilReporter *Reporter
	nilReporter.Start("a", 1, 0) // a nil reporter is a no-op
	nilReporter.Add("a", 1)
}

func TestTerminalShowsRateAndETA(t *testing.T) {
	var buf bytes.Buffer
	r := New(&buf, Terminal, "fetch")
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = c.now
	r.SetTotal(4 << 20)
	r.Start("model/a", 4<<20, 0)
	c.t = c.t.Add(time.Second)
	r.Add("model/a", 1<<20)
	out := buf.String()
	for _, want := range []string{"model/a 1.0 MiB / 4.0 MiB (25%) 1.0 MiB/s ETA 3s", "fetch total"} {
		if !strings.Contains(out, want) {
			t.Fatalf("terminal output lacks %q:\n%q", want, out)
		}
	}
	r.Done("model/a", nil)
	r.Stop()
	if !strings.Contains(buf.String(), "fetch model/a 1.0 MiB done") {
		t.Fatalf("no done line: %q", buf.String())
	}
}
