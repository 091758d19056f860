package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/rogpeppe/go-internal/testscript"
)

// systemdContainerReady reports whether [systemd] scripts can boot a
// container whose PID 1 is systemd: root, systemd-nspawn and overlayfs.
func systemdContainerReady() bool {
	if os.Getuid() != 0 {
		return false
	}
	for _, tool := range []string{"systemd-nspawn", "nsenter", "mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	data, err := os.ReadFile("/proc/filesystems")
	return err == nil && strings.Contains(string(data), "overlay")
}

// cmdContainer runs the scripts that need systemd as PID 1 (which the test
// host itself may not have):
//
//	container boot       boots systemd in a container (systemd-nspawn) whose
//	                     root is a throw-away overlay of the host's, with a
//	                     private network (only lo) and $WORK bound at
//	                     /srv/work; an ext4 image with encryption support
//	                     is mounted at $WORK/mnt first. $CT is its PID 1.
//	container exec ARGS  runs ARGS inside it (every namespace of PID 1).
//
// Everything is torn down when the script ends, pass or fail: the
// container is powered off (then killed), the overlay and image unmounted.
func cmdContainer(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: container boot | container exec ARGS...")
	}
	switch args[0] {
	case "boot":
		if neg || len(args) != 1 {
			ts.Fatalf("usage: container boot")
		}
		containerBoot(ts)
	case "exec":
		if len(args) < 2 {
			ts.Fatalf("usage: container exec ARGS...")
		}
		ct := ts.Getenv("CT")
		if ct == "" {
			ts.Fatalf("container exec: no container (run 'container boot' first)")
		}
		cmd := exec.Command("nsenter", append([]string{"-t", ct, "-a", "--"}, args[1:]...)...)
		// The container has a /tmp of its own: the script's qwen-appliance
		// was copied to $WORK/bin, which is /srv/work/bin there.
		cmd.Env = append(os.Environ(), "PATH=/srv/work/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
		cmd.Stdout, cmd.Stderr = ts.Stdout(), ts.Stderr()
		err := cmd.Run()
		switch {
		case err != nil && !neg:
			ts.Fatalf("container exec %s: %v", strings.Join(args[1:], " "), err)
		case err == nil && neg:
			ts.Fatalf("container exec %s: unexpected success", strings.Join(args[1:], " "))
		}
	default:
		ts.Fatalf("container: unknown subcommand %q", args[0])
	}
}

func containerBoot(ts *testscript.TestScript) {
	run := func(name string, a ...string) { mustRun(ts, name, a...) }
	work := ts.Getenv("WORK")
	base := ts.MkAbs("ct")
	root := filepath.Join(base, "root")
	mnt := ts.MkAbs("mnt")
	var nspawn *exec.Cmd
	ts.Defer(func() {
		if nspawn != nil && nspawn.Process != nil {
			// SIGTERM asks nspawn to power the container off cleanly.
			nspawn.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { nspawn.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				nspawn.Process.Kill()
				<-done
			}
		}
		exec.Command("umount", "-l", root).Run()
		exec.Command("umount", "-l", base).Run()
		exec.Command("umount", mnt).Run()
	})

	// The script's qwen-appliance lives under /tmp, which the container
	// replaces with a tmpfs of its own; a copy goes where it can see it.
	self := ""
	for _, d := range filepath.SplitList(ts.Getenv("PATH")) {
		if p := filepath.Join(d, "qwen-appliance"); self == "" {
			if _, err := os.Stat(p); err == nil {
				self = p
			}
		}
	}
	if self == "" {
		ts.Fatalf("container boot: qwen-appliance is not on the script's PATH")
	}
	data, err := os.ReadFile(self)
	ts.Check(err)
	ts.Check(os.MkdirAll(filepath.Join(work, "bin"), 0o755))
	ts.Check(os.WriteFile(filepath.Join(work, "bin", "qwen-appliance"), data, 0o755))

	mountStoreImage(ts, ts.MkAbs("disk.img"), mnt)

	// The overlay's upper layer lives in a tmpfs, so nothing the
	// container does reaches the host's disk.
	ts.Check(os.MkdirAll(base, 0o700))
	run("mount", "-t", "tmpfs", "tmpfs", base)
	for _, d := range []string{"up", "work", "root"} {
		ts.Check(os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	run("mount", "-t", "overlay", "overlay", "-o",
		"lowerdir=/,upperdir="+filepath.Join(base, "up")+",workdir="+filepath.Join(base, "work"), root)
	// Whatever services the host image enables would boot too; the test
	// needs none of them.
	for _, u := range []string{"nginx", "postgresql", "redis-server", "memcached", "ssh", "cron", "docker", "containerd",
		"prometheus", "prometheus-node-exporter", "prometheus-alertmanager"} {
		os.Symlink("/dev/null", filepath.Join(root, "etc/systemd/system", u+".service"))
	}

	// nspawn's own seccomp filter refuses bpf(2) by default, and systemd
	// then silently runs units without their IPAddressDeny= filter; the
	// container is allowed bpf(2) and CAP_BPF so the units' filters are real.
	name := fmt.Sprintf("qa-ct-%d", os.Getpid())
	nspawn = exec.Command("systemd-nspawn", "-D", root, "-M", name, "--register=no", "--keep-unit",
		"--private-network", "--system-call-filter=bpf", "--capability=CAP_BPF", "--bind="+work+":/srv/work", "--console=passive", "-b")
	logf, err := os.Create(filepath.Join(work, "nspawn.log"))
	ts.Check(err)
	defer logf.Close()
	nspawn.Stdout, nspawn.Stderr = logf, logf
	ts.Check(nspawn.Start())

	deadline := time.Now().Add(60 * time.Second)
	for {
		if pid := containerInit(nspawn.Process.Pid); pid > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			out, _ := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-a", "--", "systemctl", "is-system-running", "--wait").Output()
			cancel()
			if s := strings.TrimSpace(string(out)); s == "running" || s == "degraded" {
				ts.Setenv("CT", strconv.Itoa(pid))
				fmt.Fprintf(ts.Stdout(), "container %s booted: systemd is pid %d (%s)\n", name, pid, s)
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(work, "nspawn.log"))
			ts.Fatalf("container did not boot in 60s:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containerInit finds the container's systemd below systemd-nspawn.
func containerInit(nspawn int) int {
	for _, pid := range proc.Descendants(nspawn) {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "systemd" {
			return pid
		}
	}
	return 0
}
