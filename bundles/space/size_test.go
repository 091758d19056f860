package space

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"123": 123, "4K": 4 << 10, "4G": 4 << 30, "4GiB": 4 << 30, "4gb": 4 << 30, "2T": 2 << 40, "650M": 650 << 20} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "4X", "1.5G", "99999999999T", "+4"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}
