package gateway

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := l.take("a", 3, 1, now); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	ok, wait := l.take("a", 3, 1, now)
	if ok || wait != 20*time.Second {
		t.Fatalf("4th request: ok=%v wait=%v, want refused for 20s", ok, wait)
	}
	if ok, _ := l.take("b", 3, 1, now); !ok {
		t.Fatal("another key shares the bucket")
	}
	if ok, _ := l.take("a", 3, 1, now.Add(20*time.Second)); !ok {
		t.Fatal("not refilled after 20s")
	}
	// Charged after the fact: the debt delays the next request.
	l.charge("c", 60, 120, now)
	if ok, wait := l.take("c", 60, 0, now); ok || wait < 60*time.Second {
		t.Fatalf("after a 120-token charge at 60/min: ok=%v wait=%v", ok, wait)
	}
	l.forget(3, now.Add(time.Hour))
	if len(l.buckets) != 0 {
		t.Fatalf("%d buckets left after forget", len(l.buckets))
	}
}
