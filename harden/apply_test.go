package harden

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func simplePolicy(admin ...string) EgressPolicy {
	p := EgressPolicy{APIPort: 8443, SSHPort: 22, ClientCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, a := range admin {
		p.AdminCIDRs = append(p.AdminCIDRs, netip.MustParsePrefix(a))
	}
	return p
}

var remote = &Session{Client: netip.MustParseAddr("192.0.2.10"), ClientPort: 50000, ServerPort: 22}

func TestApplyRefusesLockout(t *testing.T) {
	nf := &fakeNetfilter{}
	root := Root(t.TempDir())
	_, err := Apply(context.Background(), nf, Options{Policy: simplePolicy(), Root: root, Session: remote})
	if !errors.Is(err, ErrLockout) {
		t.Fatalf("got %v, want ErrLockout", err)
	}
	if nf.table != nil || nf.replaces != 0 {
		t.Fatal("refused apply changed the firewall")
	}
	if _, err := os.Stat(root.Path(RulesPath)); err == nil {
		t.Fatal("refused apply wrote the rules file")
	}
	// An admin CIDR covering the session makes it safe.
	if _, err := Apply(context.Background(), nf, Options{Policy: simplePolicy("192.0.2.0/24"), Root: root, Session: remote}); err != nil {
		t.Fatal(err)
	}
	// A covering CIDR on the wrong port does not.
	p := simplePolicy("192.0.2.0/24")
	p.SSHPort = 2222
	if _, err := Apply(context.Background(), nf, Options{Policy: p, Root: root, Session: remote}); !errors.Is(err, ErrLockout) {
		t.Fatalf("admin CIDR on another port: got %v, want ErrLockout", err)
	}
}

// confirmWindow runs the confirmation flow against nf: unconfirmed, the
// previous table comes back; confirmed from a new connection, it stays.
func confirmWindow(t *testing.T, nf Netfilter) {
	t.Helper()
	ctx := context.Background()
	root := Root(t.TempDir())
	first := simplePolicy("198.51.100.0/24")
	if _, err := Apply(ctx, nf, Options{Policy: first, Root: root}); err != nil {
		t.Fatal(err)
	}
	firstHash := Build(first).Hash()

	second := simplePolicy()
	second.APIPort = 9443
	start := time.Now()
	_, err := Apply(ctx, nf, Options{Policy: second, Root: root, Session: remote, ConfirmTimeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("unconfirmed apply: got %v, want ErrNotConfirmed", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Error("did not wait for the confirmation window")
	}
	st, err := nf.Live()
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(st.Table, Build(first).Table()); len(d) > 0 {
		t.Fatalf("after an unconfirmed apply the previous table is not back:\n%s", strings.Join(d, "\n"))
	}
	if rec, err := LoadRecord(root); err != nil || rec.SHA256 != firstHash {
		t.Fatalf("unconfirmed apply changed the persisted state: %v %+v", err, rec)
	}
	if err := Confirm(root, nil); !errors.Is(err, ErrNothingPending) {
		t.Fatalf("confirm with nothing pending: got %v", err)
	}

	// Confirmed from a new connection while apply waits.
	done := make(chan error, 1)
	go func() {
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(root.pendingPath()); err != nil {
				continue
			}
			if err := Confirm(root, remote); !errors.Is(err, ErrSameSession) {
				done <- errors.New("confirm over the applying session was not refused")
				return
			}
			again := *remote
			again.ClientPort++
			done <- Confirm(root, &again)
			return
		}
		done <- errors.New("apply never opened a confirmation window")
	}()
	res, err := Apply(ctx, nf, Options{Policy: second, Root: root, Session: remote, ConfirmTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !res.Confirmed {
		t.Error("result not marked confirmed")
	}
	st, err = nf.Live()
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(st.Table, Build(second).Table()); len(d) > 0 {
		t.Fatalf("confirmed table not live:\n%s", strings.Join(d, "\n"))
	}
	if rec, err := LoadRecord(root); err != nil || rec.SHA256 != Build(second).Hash() {
		t.Fatalf("confirmed apply not persisted: %v", err)
	}
	if _, err := os.Stat(root.pendingPath()); err == nil {
		t.Error("pending marker left behind")
	}
}

func TestConfirmWindowFake(t *testing.T) { confirmWindow(t, &fakeNetfilter{}) }

func TestApplyRetriesConcurrentChange(t *testing.T) {
	nf := &fakeNetfilter{raceOnce: 2}
	if _, err := Apply(context.Background(), nf, Options{Policy: simplePolicy(), Root: Root(t.TempDir())}); err != nil {
		t.Fatalf("two lost races then success: %v", err)
	}
	nf = &fakeNetfilter{raceOnce: casTries}
	_, err := Apply(context.Background(), nf, Options{Policy: simplePolicy(), Root: Root(t.TempDir())})
	if !errors.Is(err, ErrConcurrentChange) {
		t.Fatalf("always racing: got %v, want ErrConcurrentChange", err)
	}
	if nf.table != nil {
		t.Fatal("a lost race left a table")
	}
}

func TestApplyPersists(t *testing.T) {
	nf := &fakeNetfilter{}
	root := Root(t.TempDir())
	p := simplePolicy()
	res, err := Apply(context.Background(), nf, Options{Policy: p, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(root.Path(RulesPath))
	if err != nil || string(rules) != Build(p).Text() {
		t.Fatalf("rules file: %v", err)
	}
	if fi, _ := os.Stat(root.Path(RulesPath)); fi.Mode().Perm() != 0o600 {
		t.Errorf("rules file mode %v", fi.Mode().Perm())
	}
	if target, err := os.Readlink(root.wantsLink()); err != nil || target != UnitDir+"/"+FirewallUnit {
		t.Errorf("boot unit not enabled: %q %v", target, err)
	}
	if unit, err := os.ReadFile(res.UnitFile); err != nil || string(unit) != FirewallUnitText() {
		t.Errorf("unit file: %v", err)
	}
	st, err := Check(nf, root)
	if err != nil || !st.OK() {
		t.Fatalf("status: %v %+v", err, st)
	}
	// Tampering with the rules file shows in status.
	if err := os.WriteFile(root.Path(RulesPath), append(rules, "# edited\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := Check(nf, root); st.OK() || st.FileIntact {
		t.Fatal("status missed an edited rules file")
	}
	// Drift of the live table shows in status with a diff.
	nf.table.Chains[2].Rules = nf.table.Chains[2].Rules[:1]
	st, _ = Check(nf, root)
	if st.InSync || len(st.Diff) == 0 {
		t.Fatal("status missed live drift")
	}
	if err := Remove(nf, root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{root.Path(RulesPath), root.Path(StatePath), res.UnitFile, root.wantsLink()} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left after remove", p)
		}
	}
	if nf.table != nil {
		t.Error("table left after remove")
	}
}

func TestApplyRestoresWhenBatchFails(t *testing.T) {
	nf := &fakeNetfilter{}
	root := Root(t.TempDir())
	if _, err := Apply(context.Background(), nf, Options{Policy: simplePolicy(), Root: root}); err != nil {
		t.Fatal(err)
	}
	nf.failNext = errors.New("kernel says no")
	p := simplePolicy()
	p.APIPort = 1
	if _, err := Apply(context.Background(), nf, Options{Policy: p, Root: root}); err == nil {
		t.Fatal("failed batch reported success")
	}
	if d := Diff(nf.table, Build(simplePolicy()).Table()); len(d) > 0 {
		t.Fatalf("failed batch changed the table: %v", d)
	}
}

// Remove takes away the sysinit.target.wants directory Apply made once it
// is empty, and never one that existed before or holds another unit.
func TestRemoveWantsDir(t *testing.T) {
	ctx := context.Background()
	apply := func(t *testing.T, root Root) {
		t.Helper()
		if _, err := Apply(ctx, &fakeNetfilter{}, Options{Policy: simplePolicy(), Root: root}); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(t *testing.T, root Root) {
		t.Helper()
		if err := Remove(&fakeNetfilter{}, root); err != nil {
			t.Fatal(err)
		}
	}
	wants := func(root Root) string { return filepath.Dir(root.wantsLink()) }
	t.Run("made", func(t *testing.T) {
		root := Root(t.TempDir())
		apply(t, root)
		apply(t, root) // applied again: still the one that made it
		remove(t, root)
		if _, err := os.Lstat(wants(root)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after remove: %v", wants(root), err)
		}
		if _, err := os.Stat(root.Path(UnitDir)); err != nil {
			t.Errorf("remove took more than the wants directory: %v", err)
		}
	})
	t.Run("existed", func(t *testing.T) {
		root := Root(t.TempDir())
		if err := os.MkdirAll(wants(root), 0o755); err != nil {
			t.Fatal(err)
		}
		apply(t, root)
		remove(t, root)
		if _, err := os.Stat(wants(root)); err != nil {
			t.Errorf("the wants directory that was there before went: %v", err)
		}
	})
	t.Run("holds another unit", func(t *testing.T) {
		root := Root(t.TempDir())
		apply(t, root)
		other := filepath.Join(wants(root), "other.service")
		if err := os.Symlink("/etc/systemd/system/other.service", other); err != nil {
			t.Fatal(err)
		}
		remove(t, root)
		if _, err := os.Lstat(other); err != nil {
			t.Errorf("another unit's link went: %v", err)
		}
		if _, err := os.Lstat(root.wantsLink()); err == nil {
			t.Error("the firewall's link stayed")
		}
	})
}
