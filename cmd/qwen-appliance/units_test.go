package main

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{"0": 0, "4096": 4096, "4K": 4096, "4k": 4096, "16M": 16 << 20, "4G": 4 << 30, "4GiB": 4 << 30,
		"1T": 1 << 40, "1.5G": 3 << 29, "512MB": 512 << 20}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "4X", "abc", "1e400", "NaN", "99999999P"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

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
