package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/vishvananda/netns"
)

// sandboxUser looks NAME up in the sandbox root's passwd ($WORK/root);
// "nobody" is uid 65534 wherever.
func sandboxUser(ts *testscript.TestScript, name string) (uid, gid int) {
	if name == "nobody" {
		return 65534, 65534
	}
	f, err := os.Open(ts.MkAbs("root/etc/passwd"))
	ts.Check(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Split(sc.Text(), ":"); len(fs) == 7 && fs[0] == name {
			uid, _ = strconv.Atoi(fs[2])
			gid, _ = strconv.Atoi(fs[3])
			return uid, gid
		}
	}
	ts.Fatalf("no user %s in %s", name, ts.MkAbs("root/etc/passwd"))
	return 0, 0
}

// cmdAsUser USER PROG ARGS... runs PROG as the sandbox's USER (its uid and
// group, no others), so a script can show what that user may read.
func cmdAsUser(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: asuser USER PROG ARGS...")
	}
	uid, gid := sandboxUser(ts, args[0])
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
	cmd.Stdout, cmd.Stderr = ts.Stdout(), ts.Stderr()
	err := cmd.Run()
	if err != nil && !neg {
		ts.Fatalf("asuser %s: %v", strings.Join(args, " "), err)
	}
	if err == nil && neg {
		ts.Fatalf("asuser %s: unexpected success", strings.Join(args, " "))
	}
}

// cmdDialAs USER runtime|ADDR connects to the recorded runtime (or ADDR) as
// the sandbox's USER from inside $NS, in a child process (verify's own
// connection probe), and prints what happened: "connected", "refused …".
func cmdDialAs(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: dialas USER runtime|ADDR")
	}
	uid, gid := sandboxUser(ts, args[0])
	addr := args[1]
	if addr == "runtime" {
		var st struct {
			Runtime struct{ Listen []string } `json:"runtime"`
		}
		data, err := os.ReadFile(ts.MkAbs("root/var/lib/qwen-appliance/state.json"))
		ts.Check(err)
		ts.Check(json.Unmarshal(data, &st))
		if len(st.Runtime.Listen) == 0 {
			ts.Fatalf("no runtime address recorded")
		}
		addr = st.Runtime.Listen[0]
	}
	var out []byte
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The child is forked from this thread and starts in its
		// namespace; the thread goes back to its own before it is
		// unlocked. (A thread left behind would put this test process
		// into $NS when it is the main one, and the sandbox's cleanup,
		// which kills every process in $NS, would kill the test.)
		runtime.LockOSThread()
		orig, nerr := netns.Get()
		if nerr != nil {
			err = nerr
			return // the thread stays locked: the runtime ends it
		}
		defer orig.Close()
		ns, nerr := netns.GetFromName(ts.Getenv("NS"))
		if nerr != nil {
			err = nerr
			runtime.UnlockOSThread()
			return
		}
		defer ns.Close()
		if err = netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			return
		}
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = []string{"QWA_VERIFY_DIAL=" + addr}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
		out, err = cmd.Output()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
	fmt.Fprintf(ts.Stdout(), "uid %d to %s: %s\n", uid, addr, strings.TrimSpace(string(out)))
	if err != nil && !neg {
		ts.Fatalf("dialas %s: %v", strings.Join(args, " "), err)
	}
	if err == nil && neg {
		ts.Fatalf("dialas %s: unexpected success (connected)", strings.Join(args, " "))
	}
}

// cmdWhoRuns prints, for the runtime and the gateway install recorded,
// the uid the process runs as and that uid's name in the sandbox.
func cmdWhoRuns(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: whoruns")
	}
	names := map[int]string{}
	data, err := os.ReadFile(ts.MkAbs("root/etc/passwd"))
	ts.Check(err)
	for _, l := range strings.Split(string(data), "\n") {
		if fs := strings.Split(l, ":"); len(fs) == 7 {
			id, _ := strconv.Atoi(fs[2])
			names[id] = fs[0]
		}
	}
	pids := recordedPIDs(ts.MkAbs("root/var/lib/qwen-appliance/state.json"))
	for _, svc := range []string{"runtime", "gateway"} {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[svc]))
		ts.Check(err)
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == "Uid:" {
				uid, _ := strconv.Atoi(f[2])
				fmt.Fprintf(ts.Stdout(), "%s uid=%d user=%s\n", svc, uid, names[uid])
			}
		}
	}
}
