package harden

import (
	"fmt"
	"sync"
)

// fakeNetfilter keeps the table in memory and counts generations like the
// kernel; raceOnce makes the next Replace lose a compare-and-swap.
type fakeNetfilter struct {
	mu       sync.Mutex
	gen      uint32
	table    *Table
	raceOnce int // number of Replace calls that find the generation moved
	replaces int
	failNext error
}

var _ Netfilter = (*fakeNetfilter)(nil)

func (f *fakeNetfilter) Live() (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return State{Gen: f.gen, Table: f.table}, nil
}

func (f *fakeNetfilter) Replace(gen uint32, want *Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.raceOnce > 0 {
		f.raceOnce--
		f.gen++ // someone else committed
	}
	if gen != f.gen {
		return fmt.Errorf("fake: %w", ErrConcurrentChange)
	}
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	f.replaces++
	f.gen++
	f.table = want
	return nil
}
