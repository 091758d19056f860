package gateway

import (
	"math"
	"sync"
	"time"
)

// bucket is a token bucket refilled continuously at rate per second up to
// burst. Its level may go negative when a cost is charged after the fact
// (completion tokens are known only when the answer ends), which delays
// later requests instead of cutting an answer short.
type bucket struct {
	level float64
	last  time.Time
}

// limiter keeps one bucket per key (token ID or client address).
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

func newLimiter() *limiter { return &limiter{buckets: map[string]*bucket{}} }

func (l *limiter) get(key string, perMinute float64, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		b = &bucket{level: perMinute, last: now}
		l.buckets[key] = b
		return b
	}
	rate := perMinute / 60
	b.level = math.Min(perMinute, b.level+rate*now.Sub(b.last).Seconds())
	b.last = now
	return b
}

// take charges cost when at least one unit is left, and otherwise says how
// long until one is.
func (l *limiter) take(key string, perMinute, cost float64, now time.Time) (ok bool, wait time.Duration) {
	if perMinute <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.get(key, perMinute, now)
	if b.level < 1 {
		return false, time.Duration((1 - b.level) / (perMinute / 60) * float64(time.Second))
	}
	b.level -= cost
	return true, 0
}

// charge takes cost unconditionally (after the fact).
func (l *limiter) charge(key string, perMinute, cost float64, now time.Time) {
	if perMinute <= 0 || cost <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.get(key, perMinute, now).level -= cost
}

// forget drops buckets that have refilled, so the map does not grow with
// every address that ever connected.
func (l *limiter) forget(perMinute float64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.level+perMinute/60*now.Sub(b.last).Seconds() >= perMinute {
			delete(l.buckets, k)
		}
	}
}
