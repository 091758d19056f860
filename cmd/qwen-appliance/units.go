package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseTimeOrAfter reads an absolute time (RFC 3339) or a span after base:
// a Go duration ("36h") or days ("90d") or years ("2y").
func parseTimeOrAfter(s string, base time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := parseSpan(s); err == nil {
		return base.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a span like 90d, 2y or 36h", s)
}

// parseSpan reads a Go duration or a whole number of days ("90d") or years
// ("2y", counted as 365 days).
func parseSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "y": 365 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseUint(n, 10, 32)
			if err != nil || v == 0 {
				return 0, fmt.Errorf("span %q: want a positive whole number before %q", s, suffix)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("span %q: want e.g. 90d, 2y or 36h", s)
	}
	return d, nil
}
