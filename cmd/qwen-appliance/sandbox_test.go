package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/internal/fault"
	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// scriptConditions adds [root], [ollama], [sandbox] (root with ip,
// mkfs.ext4 and mount) and [systemd] (root with systemd-nspawn and
// overlayfs, to boot a container with systemd as PID 1) and [faultinject]
// (this test binary was built with -tags faultinject, so QWA_FAULT_AFTER
// and QWA_FAIL_AFTER stop install at a step) to the script conditions.
func scriptConditions(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Getuid() == 0, nil
	case "systemd":
		return systemdContainerReady(), nil
	case "ollama":
		return runtime.FindOllama() != "", nil
	case "faultinject":
		return fault.Enabled, nil
	case "sandbox":
		for _, tool := range []string{"ip", "mkfs.ext4", "mount", "umount", "nft"} {
			if _, err := exec.LookPath(tool); err != nil {
				return false, nil
			}
		}
		return os.Getuid() == 0, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

// sandboxSeq numbers the sandboxes of this test process.
var sandboxSeq atomic.Int64

// cmdSandbox makes the isolated host of the end-to-end scripts: a network
// namespace ($NS) joined to a peer at $PEER, and an ext4 image with encryption support mounted at $MNT.
// Everything is torn down when the script ends, pass or fail: services the
// install recorded under $WORK/root are killed first, then the image is
// unmounted and detached and the namespace deleted.
func cmdSandbox(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: sandbox")
	}
	// Scripts run in parallel in this process: each sandbox takes the next
	// number (namespace names, veth names and the 10.233.n.0/24 subnet),
	// so no two collide (a collision let one script's cleanup kill
	// another's services).
	n := int(sandboxSeq.Add(1)%200) + 20
	ns := fmt.Sprintf("qa-ts-%d-%d", os.Getpid(), n)
	peer := fmt.Sprintf("qa-tp-%d-%d", os.Getpid(), n)
	mnt := ts.MkAbs("mnt")
	run := func(name string, a ...string) { mustRun(ts, name, a...) }
	ts.Defer(func() {
		killNamespace(ns)
		exec.Command("umount", mnt).Run()
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "netns", "del", peer).Run()
	})
	// The service user must be able to pass through the script's private
	// temporary directories to reach the sandbox root (traverse only).
	work := ts.Getenv("WORK")
	for _, d := range []string{work, filepath.Dir(work)} {
		ts.Check(os.Chmod(d, 0o711))
	}
	// "the internet": a peer namespace on a veth pair, which answers TCP
	// (with resets) and ICMP when nothing filters the host.
	run("ip", "netns", "add", ns)
	run("ip", "netns", "add", peer)
	vh, vp := fmt.Sprintf("qats%d", n), fmt.Sprintf("qatp%d", n)
	run("ip", "link", "add", vh, "netns", ns, "type", "veth", "peer", "name", vp, "netns", peer)
	run("ip", "-n", ns, "addr", "add", fmt.Sprintf("10.233.%d.1/24", n), "dev", vh)
	run("ip", "-n", peer, "addr", "add", fmt.Sprintf("10.233.%d.2/24", n), "dev", vp)
	for _, a := range [][]string{{ns, "lo"}, {peer, "lo"}, {ns, vh}, {peer, vp}} {
		run("ip", "-n", a[0], "link", "set", a[1], "up")
	}
	mountStoreImage(ts, ts.MkAbs("disk.img"), mnt)
	ts.Setenv("NS", ns)
	ts.Setenv("PEER", fmt.Sprintf("10.233.%d.2", n))
	ts.Setenv("MNT", mnt)
}

// mustRun runs a command or fails the script with its output.
func mustRun(ts *testscript.TestScript, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		ts.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// mountStoreImage makes a sparse 2 GiB ext4 image with encryption support
// (preflight wants 1 GiB free) and loop-mounts it at mnt; the caller's
// deferred cleanup unmounts it.
func mountStoreImage(ts *testscript.TestScript, img, mnt string) {
	ts.Check(os.WriteFile(img, nil, 0o600))
	ts.Check(os.Truncate(img, 2<<30))
	mustRun(ts, "mkfs.ext4", "-q", "-O", "encrypt", img)
	ts.Check(os.MkdirAll(mnt, 0o755))
	mustRun(ts, "mount", "-o", "loop", img, mnt)
}

// cmdKillService NAME stops the runtime or gateway that the sandbox's
// install recorded, as a crash would.
func cmdKillService(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: killservice runtime|gateway")
	}
	pids := recordedPIDs(ts.MkAbs("root/var/lib/qwen-appliance/state.json"))
	pid, ok := pids[args[0]]
	if !ok {
		ts.Fatalf("no %s recorded", args[0])
	}
	ts.Check(syscall.Kill(-pid, syscall.SIGKILL))
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdNSProcs prints the command line of every process in the sandbox's
// network namespace, one per line, so a script can count what runs there.
func cmdNSProcs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: nsprocs")
	}
	out, err := exec.Command("ip", "netns", "pids", ts.Getenv("NS")).Output()
	ts.Check(err)
	if len(strings.Fields(string(out))) == 0 {
		fmt.Fprintln(ts.Stdout(), "no processes")
	}
	for _, pid := range strings.Fields(string(out)) {
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			continue
		}
		fmt.Fprintln(ts.Stdout(), strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
	}
}

// cmdSnapshot FILE writes what a refused or failed install must leave
// unchanged: every path under the sandbox root (ROOT/etc/passwd and group
// included) and the store's filesystem with its type, mode, owner and
// content hash, and the namespace's nftables ruleset. Left out: logs (the
// running gateway appends to them) and shadow-utils' backups of the account
// files (passwd-, group-, ...), which every useradd and userdel rewrites.
func cmdSnapshot(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: snapshot FILE")
	}
	var b strings.Builder
	for _, top := range []string{ts.MkAbs("root"), ts.Getenv("MNT")} {
		err := filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if strings.Contains(p, "/var/log/") {
				return nil
			}
			switch filepath.Base(p) {
			case "passwd-", "group-", "shadow-", "gshadow-":
				if filepath.Base(filepath.Dir(p)) == "etc" {
					return nil
				}
			}
			st := fi.Sys().(*syscall.Stat_t)
			line := fmt.Sprintf("%s %v %d:%d", p, fi.Mode(), st.Uid, st.Gid)
			if fi.Mode().IsRegular() {
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				line += fmt.Sprintf(" %x", sha256.Sum256(data))
			}
			b.WriteString(line + "\n")
			return nil
		})
		ts.Check(err)
	}
	out, err := exec.Command("ip", "netns", "exec", ts.Getenv("NS"), "nft", "list", "ruleset").CombinedOutput()
	ts.Check(err)
	b.Write(out)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(b.String()), 0o644))
}

// recordedPIDs reads the runtime's and gateway's PIDs from a state file.
func recordedPIDs(stateFile string) map[string]int {
	out := map[string]int{}
	data, err := os.ReadFile(stateFile)
	if err != nil {
		return out
	}
	var st struct {
		Runtime struct{ PID int } `json:"runtime"`
		Gateway struct{ PID int } `json:"gateway"`
	}
	if json.Unmarshal(data, &st) == nil {
		out["runtime"], out["gateway"] = st.Runtime.PID, st.Gateway.PID
	}
	return out
}

// killNamespace kills every process in the network namespace: whatever a
// failed script left running (services, their servers and workers).
func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(200 * time.Millisecond)
}
