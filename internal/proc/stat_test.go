package proc

import (
	"errors"
	"strings"
	"testing"
)

// A real line from this kernel, with the 52 fields it has since 5.x.
const sleepLine = "4242 (sleep) S 4100 4242 4100 34816 4242 4194304 95 0 0 0 0 0 0 0 20 0 1 0 987654 2252800 128 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

func TestParseStat(t *testing.T) {
	s, err := ParseStat([]byte(sleepLine))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PID: 4242, Comm: "sleep", State: 'S', PPID: 4100, PGRP: 4242, Start: 987654}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	// A command name can hold spaces and ")": a program renamed
	// "x) Z 1 1 (" must not be read as a zombie whose parent is 1.
	evil := strings.Replace(sleepLine, "(sleep)", "(x) Z 1 1 ( )", 1)
	s, err = ParseStat([]byte(evil))
	if err != nil {
		t.Fatal(err)
	}
	if s.Comm != "x) Z 1 1 ( " || s.State != 'S' || s.PPID != 4100 || s.Start != 987654 {
		t.Errorf("hostile name: got %+v", s)
	}
	if s.Zombie() {
		t.Error("a sleeping process read as a zombie")
	}
}

func TestParseStatRefuses(t *testing.T) {
	for name, line := range map[string]string{
		"empty":       "",
		"no name":     "4242 S 1 1",
		"no pid":      "(sleep) S 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5",
		"short":       "4242 (sleep) S 4100 4242",
		"bad ppid":    strings.Replace(sleepLine, " 4100 4242 ", " x 4242 ", 1),
		"bad start":   strings.Replace(sleepLine, "987654", "-1", 1),
		"long state":  strings.Replace(sleepLine, ") S ", ") SS ", 1),
		"reversed":    "4242 )sleep( S",
		"negative id": strings.Replace(sleepLine, "4242 (", "-4 (", 1),
	} {
		if _, err := ParseStat([]byte(line)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %q: got %v, want ErrMalformed", name, line, err)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(sleepLine))
	f.Add([]byte(strings.Replace(sleepLine, "(sleep)", "(a (b) c))", 1)))
	f.Add([]byte("1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 2 3 4 5"))
	f.Add([]byte("7 () Z 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 18446744073709551615"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStat(data)
		if err != nil {
			return
		}
		if s.PID <= 0 || s.PPID < 0 || s.PGRP < 0 {
			t.Errorf("accepted impossible ids: %+v", s)
		}
		d := string(data)
		if want := d[strings.IndexByte(d, '(')+1 : strings.LastIndexByte(d, ')')]; s.Comm != want {
			t.Errorf("command name %q, want everything between the first ( and the last ): %q", s.Comm, want)
		}
	})
}
