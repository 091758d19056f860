//go:build linux

package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSupervisor runs the stand-in for 'run' on c and returns it once its
// server is ready, with the server's process group.
func startSupervisor(t *testing.T, c Config, guarded bool) (*exec.Cmd, int) {
	t.Helper()
	data, err := json.Marshal(supervisedConfig{Config: c, Guarded: guarded})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "supervise.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), superviseEnv+"="+file)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		line <- sc.Text()
	}()
	var pgid int
	select {
	case l := <-line:
		if _, err := fmt.Sscanf(l, "ready %d", &pgid); err != nil {
			t.Fatalf("supervisor said %q, want ready PID", l)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("supervisor not ready after 120 s")
	}
	return cmd, pgid
}

// killSupervisor kills the stand-in for 'run' with SIGKILL, the way the OOM
// killer or an operator's kill -9 would, and reaps it.
func killSupervisor(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// waitGone waits up to limit for every process mentioning marker to end and
// returns those still running.
func waitGone(marker string, limit time.Duration) []string {
	deadline := time.Now().Add(limit)
	for {
		left := leftovers(marker)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGuardSupervisorKilled: when the supervisor is killed with SIGKILL, the
// server's child (a grandchild of the supervisor, which no parent-death
// signal reaches) goes too.
func TestGuardSupervisorKilled(t *testing.T) {
	c := fakeBundle(t, "child")
	cmd, pgid := startSupervisor(t, c, true)
	if n := len(GroupMembers(pgid)); n < 3 {
		t.Fatalf("process group %d: %v, want the guard, the server and its child", pgid, GroupMembers(pgid))
	}
	killSupervisor(t, cmd)
	if left := waitGone(c.Bundle, 15*time.Second); len(left) > 0 {
		t.Errorf("still running after the supervisor was killed: %q", left)
	}
	if m := GroupMembers(pgid); len(m) > 0 {
		t.Errorf("process group %d still has %v", pgid, m)
	}
}

// TestUnguardedLeavesGrandchild shows why the guard exists: without it, a
// SIGKILLed supervisor takes only its direct child down (the parent-death
// signal), and the server's own child lives on with PPID 1.
func TestUnguardedLeavesGrandchild(t *testing.T) {
	c := fakeBundle(t, "child")
	cmd, pgid := startSupervisor(t, c, false)
	defer signalGroup(pgid, syscall.SIGKILL)
	killSupervisor(t, cmd)
	time.Sleep(500 * time.Millisecond)
	if len(GroupMembers(pgid)) == 0 {
		t.Errorf("process group %d is empty: the unguarded case no longer leaves the child behind, so TestGuardSupervisorKilled proves nothing", pgid)
	}
}

// TestGuardSupervisorKilledOllama: the same with the real Ollama, whose
// runner (started by 'ollama serve' once the model loads) is the grandchild
// that outlived 'run' before the guard.
func TestGuardSupervisorKilledOllama(t *testing.T) {
	c := demoBundle(t, nil)
	marker := filepath.Dir(c.Store)
	cmd, pgid := startSupervisor(t, c, true)
	var runner bool
	for _, l := range leftovers(marker) {
		runner = runner || strings.Contains(l, " runner ")
	}
	if !runner {
		t.Fatalf("no Ollama runner running after the smoke test: %q", leftovers(marker))
	}
	killSupervisor(t, cmd)
	if left := waitGone(marker, 20*time.Second); len(left) > 0 {
		t.Errorf("Ollama processes still running after the supervisor was killed: %q", left)
	}
	if m := GroupMembers(pgid); len(m) > 0 {
		t.Errorf("process group %d still has %v", pgid, m)
	}
}

// TestGuardedStartStop: Stop through a guard ends the server and its child,
// and the guard reports the server's exit; SIGHUP to the guard changes nothing.
func TestGuardedStartStop(t *testing.T) {
	c := fakeBundle(t, "child")
	o := quickOptions(c)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Guard = []string{self, GuardArg}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := Smoke(context.Background(), s.BaseURL, s.Model); err != nil {
		t.Errorf("after SIGHUP to the guard: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if m := GroupMembers(pid); len(m) > 0 {
		t.Errorf("process group %d still has %v", pid, m)
	}
	assertNothingLeft(t, c.Bundle)
}

// TestReopenLog: after the log was moved away, ReopenLog continues it in a
// fresh file at the same path.
func TestReopenLog(t *testing.T) {
	c := fakeBundle(t, "plain")
	s, err := Start(context.Background(), quickOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := os.Rename(s.LogFile, s.LogFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReopenLog(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(s.tail, "after reopen")
	data, err := os.ReadFile(s.LogFile)
	if err != nil || string(data) != "after reopen\n" {
		t.Errorf("new log %q (%v), want the line written after reopening", data, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.ReopenLog(); err == nil {
		t.Error("ReopenLog after Stop succeeded")
	}
}
