package space

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Parse reads a byte count: plain digits, or digits followed by K, M, G or
// T (binary multiples: 4G is 4×2^30 bytes), optionally ending in "i", "iB"
// or "B" ("4GiB", "4GB" and "4g" are the same).
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "B")
	u = strings.TrimSuffix(u, "I")
	shift := 0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			u = u[:n-1]
		}
	}
	if u == "" || strings.ContainsAny(u, "+-") {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M, G or T", s)
	}
	v, err := strconv.ParseUint(u, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M, G or T", s)
	}
	if v > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(v) << shift, nil
}

// Format renders n bytes with a binary unit, e.g. "4.0 GiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
