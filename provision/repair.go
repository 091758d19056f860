package provision

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// ErrNotRoot is returned (wrapped) when install runs without root, which it
// needs for the firewall, the service users and the store.
var ErrNotRoot = errors.New("install needs root")

// ErrAddressInUse is returned (wrapped) when another program holds a gateway
// address install would listen on.
var ErrAddressInUse = errors.New("address already in use")

// precheck refuses, before anything on the host changes (and in a dry run
// too), what would fail half-way or lock the operator out: running without
// root, a firewall that would cut off the operator's own remote session,
// and gateway addresses another program holds. Errors wrap ErrNotRoot,
// harden.ErrLockout or ErrAddressInUse.
func (in *installer) precheck() error {
	if in.euid() != 0 {
		return fmt.Errorf("install: %w (running as uid %d)", ErrNotRoot, in.euid())
	}
	policy, err := in.policy(in.recordedUIDs())
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if s := in.o.Session; s != nil && !s.ThroughHere() {
		in.logf("the remote session from %s arrives at %s, not through this network namespace: its firewall cannot cut it off", s.Client, s.Server)
		in.o.Session = nil
	}
	if s := in.o.Session; s != nil && in.o.ConfirmTimeout <= 0 && !policy.Admits(s.Client, s.ServerPort) {
		return fmt.Errorf("install: firewall: %w (client %s, port %d): no --admin-cidr covers it", harden.ErrLockout, s.Client, s.ServerPort)
	}
	for _, addr := range []string{in.o.Listen, in.o.MetricsListen} {
		if in.heldByGateway(addr) {
			continue
		}
		l, err := net.Listen("tcp", addr)
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			return fmt.Errorf("install: gateway address %s: %w: %v", addr, ErrAddressInUse, err)
		case err != nil: // an address this host does not have, say
			return fmt.Errorf("install: gateway address %s: %w", addr, err)
		}
		l.Close()
	}
	return nil
}

func (in *installer) euid() int {
	if in.o.euid != nil {
		return in.o.euid()
	}
	return os.Geteuid()
}

// heldByGateway reports whether the previous installation's running gateway
// listens on addr's port: it is restarted or kept, so the port is free for
// this install.
func (in *installer) heldByGateway(addr string) bool {
	if in.prev == nil || !in.running(in.prev.Gateway.Service) {
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(in.prev.Gateway.Listen, func(l string) bool {
		_, p, err := net.SplitHostPort(l)
		return err == nil && p == port
	})
}

// drift lists how the host differs from the recorded installation prev:
// its firewall table, the files install recorded (rules file, boot and
// service units), and its services. Install repairs each by running its
// steps again.
func (in *installer) drift(prev *state.State) []string {
	var out []string
	// Changed settings re-apply the firewall anyway, and the live table then
	// differs from the new policy by design: only compare it when the
	// settings are the recorded ones.
	if len(in.settings) == 0 {
		out = append(out, in.firewallDrift()...)
	}
	paths := make([]string, 0, len(prev.Files))
	for p := range prev.Files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		got, err := fileDigest(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			out = append(out, p+": missing")
		case err != nil:
			out = append(out, p+": "+err.Error())
		case got != prev.Files[p]:
			out = append(out, p+": changed (sha256 "+got[:16]+"…, recorded "+shortSum(prev.Files[p])+"…)")
		}
	}
	if gw, _ := in.recordedUIDs(); gw > 0 {
		for _, p := range in.secretFiles() {
			fi, err := os.Stat(p)
			if err != nil {
				continue // a missing secret is made again by the gateway step
			}
			if uid, _ := ownerOf(fi); uid != gw || fi.Mode().Perm() != 0o600 {
				out = append(out, fmt.Sprintf("%s: mode %04o, owner uid %d (want 0600, the gateway's uid %d)", p, fi.Mode().Perm(), uid, gw))
			}
		}
	}
	if _, rt := in.recordedUIDs(); rt > 0 {
		if err := in.privateReleases(harden.Identity{UID: rt, GID: -1}, false); err != nil {
			out = append(out, err.Error())
		}
	}
	out = append(out, in.kbDrift(prev)...)
	for _, svc := range []state.Service{prev.Runtime, prev.Gateway.Service} {
		if !in.running(svc) {
			out = append(out, fmt.Sprintf("the %s (%s): not running", svc.Name, describe(svc)))
		}
	}
	if in.running(prev.Gateway.Service) && (prev.Gateway.MetricsURL == "" || !httpOK(prev.Gateway.MetricsURL+"/readyz")()) {
		out = append(out, "the gateway: not ready ("+prev.Gateway.MetricsURL+"/readyz)")
	}
	return out
}

// firewallDrift compares the live table with the one the settings ask for.
func (in *installer) firewallDrift() []string {
	name := "firewall table inet " + harden.TableName
	policy, err := in.policy(in.recordedUIDs())
	if err != nil {
		return []string{name + ": " + err.Error()}
	}
	nf, err := in.netfilter()
	if err != nil {
		return []string{name + ": unreadable (" + err.Error() + ")"}
	}
	live, err := nf.Live()
	if err != nil {
		return []string{name + ": unreadable (" + err.Error() + ")"}
	}
	d := harden.Diff(live.Table, harden.Build(policy).Table())
	if len(d) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s: differs from the recorded policy (%d difference(s), first: %s)", name, len(d), strings.ReplaceAll(d[0], "\x00", " "))}
}

func shortSum(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return strconv.Quote(s)
}

// privateReleases walks the store's releases, which copy-in leaves to the
// runtime's user alone (no group or other bits, owner id). With fix it
// takes group and other bits away and gives each path back to id; without,
// it returns an error that names the first path found otherwise and how
// many there are.
func (in *installer) privateReleases(id harden.Identity, fix bool) error {
	return in.privateTree(filepath.Join(in.o.Store, ReleasesDir), id, fix, "the runtime's")
}

// privateTree walks dir, whose every entry must be id's alone: no group or
// other bits, owner id.UID and, unless id.GID is negative, group id.GID.
// With fix it makes each so; without, it returns an error naming the first
// entry that is not and how many are not. Anything but directories and
// regular files (a symlink, a FIFO) is refused either way: install never
// makes one there. who names the owner in errors ("the runtime's").
func (in *installer) privateTree(dir string, id harden.Identity, fix bool, who string) error {
	bad, first := 0, ""
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if errors.Is(err, os.ErrNotExist) && p == dir {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 || !(fi.IsDir() || fi.Mode().IsRegular()) {
			return fmt.Errorf("%s: a %s, which install never makes there; remove it and re-run install", p, fi.Mode().Type())
		}
		uid, gid := ownerOf(fi)
		if fi.Mode().Perm()&0o077 == 0 && uid == id.UID && (id.GID < 0 || gid == id.GID) {
			return nil
		}
		if !fix {
			if bad++; first == "" {
				first = fmt.Sprintf("%s: mode %04o, owner %d:%d", p, fi.Mode().Perm(), uid, gid)
			}
			return nil
		}
		if err := os.Chmod(p, fi.Mode().Perm()&^0o077); err != nil {
			return err
		}
		return in.sys.host.Lchown(p, id.UID, id.GID)
	})
	switch {
	case err != nil:
		return err
	case bad > 0:
		return fmt.Errorf("%s (want no group or other bits, %s uid %d; %d path(s) in %s)", first, who, id.UID, bad, dir)
	}
	return nil
}
