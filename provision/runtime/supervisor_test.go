package runtime

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// leftovers lists live processes whose command line or environment mention
// marker (a test's temporary directory): anything a test started that still
// runs.
func leftovers(marker string) []string {
	entries, _ := os.ReadDir("/proc")
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if strings.Contains(string(cmdline), marker) || strings.Contains(string(environ), marker) {
			found = append(found, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

// assertNothingLeft waits briefly for processes mentioning marker to vanish.
func assertNothingLeft(t *testing.T, marker string) {
	t.Helper()
	var left []string
	for range 50 {
		if left = leftovers(marker); len(left) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("still running after stop: %q", left)
}

func quickOptions(c Config) Options {
	return Options{Config: c, ReadyTimeout: 20 * time.Second, StopTimeout: 2 * time.Second,
		Backoff: 20 * time.Millisecond, MaxRestarts: 2}
}

func TestStartStop(t *testing.T) {
	c := fakeBundle(t, "child")
	s, err := Start(context.Background(), quickOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	if s.Smoke.Content != "ready" || s.Stream.Content != "ready" || s.Stream.CompletionTokens != 2 {
		t.Errorf("smoke %+v stream %+v", s.Smoke, s.Stream)
	}
	pid := s.PID()
	if len(GroupMembers(pid)) < 2 {
		t.Errorf("process group %d: %v, want the server and its child", pid, GroupMembers(pid))
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if m := GroupMembers(pid); len(m) > 0 {
		t.Errorf("process group %d still has %v", pid, m)
	}
	assertNothingLeft(t, c.Bundle)
	log, _ := os.ReadFile(s.LogFile)
	if !strings.Contains(string(log), "fake llama-server: listening") {
		t.Errorf("server log lacks its output:\n%s", log)
	}
}

func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	c := fakeBundle(t, "ignore-term,child")
	o := quickOptions(c)
	o.StopTimeout = 300 * time.Millisecond
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < o.StopTimeout {
		t.Errorf("stopped after %s, before the SIGTERM grace of %s", d, o.StopTimeout)
	}
	assertNothingLeft(t, c.Bundle)
}

func TestCancelStops(t *testing.T) {
	c := fakeBundle(t, "child")
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, quickOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := s.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	assertNothingLeft(t, c.Bundle)
}

func TestRestartThenGiveUp(t *testing.T) {
	c := fakeBundle(t, "die-after-smoke,child")
	s, err := Start(context.Background(), quickOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		s.Stop()
		t.Fatal("supervision did not give up")
	}
	err = s.Wait()
	if !errors.Is(err, ErrGaveUp) {
		t.Fatalf("Wait = %v, want ErrGaveUp", err)
	}
	if s.Restarts() != 2 {
		t.Errorf("%d restarts, want 2", s.Restarts())
	}
	for _, want := range []string{"after 2 restarts", "exit status 3", "simulated crash"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	assertNothingLeft(t, c.Bundle)
}

func TestStartFailures(t *testing.T) {
	t.Run("server exits at once", func(t *testing.T) {
		c := fakeBundle(t, "exit")
		_, err := Start(context.Background(), quickOptions(c))
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "exited before it was ready") ||
			!strings.Contains(se.Log, "invalid magic") {
			t.Fatalf("err = %v", err)
		}
		assertNothingLeft(t, c.Bundle)
	})
	t.Run("missing binary", func(t *testing.T) {
		c := fakeBundle(t, "")
		os.Remove(filepath.Join(c.Bundle, filepath.FromSlash(LlamaCppEntrypoint)))
		_, err := Start(context.Background(), quickOptions(c))
		if !errors.Is(err, ErrNoBinary) {
			t.Fatalf("err = %v, want ErrNoBinary", err)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		c := fakeBundle(t, "")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c.Port = l.Addr().(*net.TCPAddr).Port
		_, err = Start(context.Background(), quickOptions(c))
		if !errors.Is(err, ErrPortInUse) {
			t.Fatalf("err = %v, want ErrPortInUse", err)
		}
		assertNothingLeft(t, c.Bundle)
	})
	t.Run("not ready in time", func(t *testing.T) {
		c := fakeBundle(t, "no-model,child")
		o := quickOptions(c)
		o.ReadyTimeout = 500 * time.Millisecond
		_, err := Start(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "not ready after 500ms") {
			t.Fatalf("err = %v", err)
		}
		assertNothingLeft(t, c.Bundle)
	})
	t.Run("non-loopback host", func(t *testing.T) {
		c := fakeBundle(t, "")
		c.Host = "0.0.0.0"
		_, err := Start(context.Background(), quickOptions(c))
		if !errors.Is(err, ErrNotLoopback) {
			t.Fatalf("err = %v, want ErrNotLoopback", err)
		}
	})
}
