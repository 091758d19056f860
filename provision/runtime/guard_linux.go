//go:build linux

package runtime

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	goruntime "runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// GuardArg is the hidden first argument that makes a program run Guard (see
// Options.Guard). cmd/qwen-appliance dispatches on it before anything else.
const GuardArg = "__runtime-guard"

// lifelineFD is the descriptor on which the guard holds the read end of a
// pipe whose write end only its supervisor has: end of file on it means the
// supervisor is gone, however it died (SIGKILL included).
const lifelineFD = 3

// guardGrace is how long the guard lets the server stop after SIGTERM when
// its supervisor died, before it kills the whole group.
const guardGrace = 10 * time.Second

// Guard runs the server argv[0] argv[1:] as its child, in the guard's own
// process group (the supervisor made the guard the group's leader), and
// returns the exit code to leave with.
//
// It exists because the kernel's parent-death signal reaches only a
// process's own children: when the supervisor is killed with SIGKILL,
// nothing it could have arranged reaches the server's children (Ollama's
// runner, vLLM's workers). The guard stays alive for that moment: it sees the
// lifeline close, stops the server's whole group (SIGTERM, then SIGKILL after
// a grace period) and goes down with it. It is a child subreaper, so what
// the server's processes orphan stays below it instead of moving to PID 1,
// and it gives the server a parent-death signal of its own in case the guard
// itself is killed.
//
// SIGTERM and SIGINT sent to the guard alone are passed on to the group;
// SIGHUP is ignored (a server restart is the supervisor's decision).
// When the server exits, whatever it left in the group is killed and the
// guard exits with the server's status (128+N for a signal N).
func Guard(argv []string) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "qwen-appliance: guard: "+format+"\n", args...)
	}
	if len(argv) == 0 {
		logf("no server to run")
		return 2
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		// A seccomp filter may refuse it; the group kill still reaches
		// orphans, which keep their process group when reparented.
		logf("become a child subreaper: %v (orphans go to PID 1, still in the group)", err)
	}
	lifeline := os.NewFile(lifelineFD, "lifeline")
	if lifeline == nil {
		logf("no lifeline on descriptor %d", lifelineFD)
		return 2
	}
	syscall.CloseOnExec(lifelineFD) // the server must not hold it open
	sigs := make(chan os.Signal, 4)
	// SIGPIPE is caught too: the guard's output goes to its supervisor,
	// and once that is dead a write would otherwise end the guard at the
	// moment it is needed. (Caught, not ignored, so the server starts
	// with the default action.)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)

	// The server's parent-death signal follows the thread that forked it;
	// this one stays locked for the guard's whole life.
	goruntime.LockOSThread()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf("start %s: %v", argv[0], err)
		return 127
	}
	server := cmd.Process.Pid
	exited := make(chan int, 1)
	go reapAll(server, exited)
	parentGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, lifeline)
		close(parentGone)
	}()

	self := os.Getpid()
	forwarded := false
	for {
		select {
		case code := <-exited:
			killGroupBut(self, syscall.SIGKILL)
			waitGroupEmpty(self, 5*time.Second)
			return code
		case sig := <-sigs:
			switch sig {
			case syscall.SIGPIPE:
				continue
			case syscall.SIGHUP:
				logf("SIGHUP ignored (the supervisor decides restarts)")
				continue
			}
			if !forwarded {
				forwarded = true
				killGroupBut(self, syscall.SIGTERM)
			}
		case <-parentGone:
			logf("supervisor gone: stopping %s (pid %d) and its group", argv[0], server)
			killGroupBut(self, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(guardGrace):
			}
			// Everything left, the guard included.
			_ = syscall.Kill(-self, syscall.SIGKILL)
			return 1
		}
	}
}

// reapAll waits for every child, the orphans the guard adopted as subreaper
// included, and sends the server's exit code once it ended.
func reapAll(server int, exited chan<- int) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: nothing left to wait for
			return
		}
		if pid != server {
			continue
		}
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		exited <- code
	}
}

// killGroupBut signals every process of self's group except self.
func killGroupBut(self int, sig syscall.Signal) {
	for _, pid := range GroupMembers(self) {
		if pid != self {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// waitGroupEmpty waits (bounded) until self is the only live member of its
// group.
func waitGroupEmpty(self int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		left := 0
		for _, pid := range GroupMembers(self) {
			if pid != self {
				left++
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
