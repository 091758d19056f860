//go:build linux

package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// exited waits (bounded) for cmd to end and reports whether it did.
func exited(cmd *exec.Cmd, within time.Duration) bool {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(within):
		return false
	}
}

func TestIdentify(t *testing.T) {
	cmd := startSleep(t)
	id, err := Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if id.Start == 0 || len(id.Boot) != 36 {
		t.Errorf("identity %+v: want a start time and a boot id", id)
	}
	if err := id.Check(); err != nil {
		t.Errorf("own process: %v", err)
	}
	self, _ := Read(os.Getpid())
	if self.PID != os.Getpid() || self.PPID != os.Getppid() {
		t.Errorf("Read(self) = %+v", self)
	}
}

// A recorded PID now held by another process (another start time, another
// boot, or a record with no identity at all) is never signalled.
func TestStopSparesAnotherProcess(t *testing.T) {
	cmd := startSleep(t)
	id, err := Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for name, other := range map[string]Identity{
		"start time": {PID: id.PID, Start: id.Start - 1, Boot: id.Boot},
		"boot":       {PID: id.PID, Start: id.Start, Boot: "00000000-0000-0000-0000-000000000000"},
		"none":       {PID: id.PID},
	} {
		var m *Mismatch
		if err := Stop(other, 100*time.Millisecond); !errors.As(err, &m) {
			t.Errorf("%s: Stop = %v, want a *Mismatch", name, err)
		}
		if err := other.Signal(syscall.SIGKILL); !errors.As(err, &m) {
			t.Errorf("%s: Signal = %v, want a *Mismatch", name, err)
		}
	}
	if exited(cmd, 200*time.Millisecond) {
		t.Fatal("the process was signalled although its identity did not match")
	}
	if err := Stop(id, 5*time.Second); err != nil {
		t.Fatalf("own process: %v", err)
	}
	if !exited(cmd, 5*time.Second) {
		t.Fatal("own process still running after Stop")
	}
	if err := Stop(id, time.Second); err != nil {
		t.Errorf("Stop of a process already gone: %v", err)
	}
}

// Stop ends a session leader's whole tree, as install's services are.
func TestStopTree(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var kids []int
	for range 100 {
		if kids = Descendants(cmd.Process.Pid); len(kids) == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(kids) != 2 {
		t.Fatalf("descendants %v, want 2", kids)
	}
	go cmd.Wait()
	id, _ := Identify(cmd.Process.Pid)
	if err := Stop(id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, k := range kids {
		if Alive(k) {
			t.Errorf("child %d survived", k)
		}
	}
}

const nsHelperEnv = "QWA_PROC_NS_HELPER"

// The case an outside review reproduced: after a crash, the PID recorded
// for a service is reused by another process in a PID namespace. Run in a
// fresh PID namespace (unshare), where this test can make the kernel hand
// out a given PID again (ns_last_pid).
func TestStopReusedPIDInNamespace(t *testing.T) {
	if os.Getenv(nsHelperEnv) == "1" {
		nsHelper(t)
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run=^TestStopReusedPIDInNamespace$", "-test.v")
	cmd.Env = append(os.Environ(), nsHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a new PID namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "reused pid spared") {
		t.Fatalf("the helper did not run its check:\n%s", out)
	}
}

func nsHelper(t *testing.T) {
	first := exec.Command("sleep", "60")
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	recorded, err := Identify(first.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	first.Process.Kill()
	first.Wait()
	// Start times count clock ticks (10 ms): a PID reused within the same
	// tick cannot be told apart. A crash, a reboot or a restarted
	// container is always far longer.
	time.Sleep(100 * time.Millisecond)
	// "Power loss": the next process is given the recorded PID.
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(recorded.PID-1)), 0); err != nil {
		t.Skipf("cannot choose the next PID: %v", err)
	}
	second := exec.Command("sleep", "60")
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { second.Process.Kill(); second.Wait() }()
	if second.Process.Pid != recorded.PID {
		t.Skipf("the kernel gave pid %d, not %d", second.Process.Pid, recorded.PID)
	}
	var m *Mismatch
	if err := Stop(recorded, 100*time.Millisecond); !errors.As(err, &m) {
		t.Fatalf("Stop(recorded) = %v, want a *Mismatch", err)
	}
	if exited(second, 300*time.Millisecond) {
		t.Fatal("the process that reused the recorded pid was killed")
	}
	fmt.Println("reused pid spared:", err)
	now, _ := Identify(second.Process.Pid)
	if err := Stop(now, 5*time.Second); err != nil || !exited(second, 5*time.Second) {
		t.Fatalf("own process not stopped: %v", err)
	}
}
