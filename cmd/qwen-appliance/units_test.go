package main

import (
	"testing"
	"time"
)

func TestParseTimeOrAfter(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"90d":                  base.Add(90 * 24 * time.Hour),
		"2y":                   base.Add(2 * 365 * 24 * time.Hour),
		"36h":                  base.Add(36 * time.Hour),
		"2027-03-01T00:00:00Z": time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC),
	}
	for in, want := range cases {
		got, err := parseTimeOrAfter(in, base)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0d", "-5d", "soon", "-1h"} {
		if _, err := parseTimeOrAfter(in, base); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
