package harden

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Options say what Apply enforces and how.
type Options struct {
	Policy EgressPolicy
	Root   Root // prefix for every file written
	// Session, when set, is the operator's remote login; Apply refuses a
	// policy that would cut it off unless ConfirmTimeout is set.
	Session *Session
	// ConfirmTimeout > 0 applies, then waits that long for Confirm, and
	// restores the previous table if no confirmation arrives.
	ConfirmTimeout time.Duration
	Log            io.Writer // progress; nil discards
	Now            func() time.Time
}

// Result says what Apply did.
type Result struct {
	Changed   bool   `json:"changed"` // the live table was replaced
	SHA256    string `json:"sha256"`
	RulesFile string `json:"rulesFile"`
	UnitFile  string `json:"unitFile"`
	Confirmed bool   `json:"confirmed,omitempty"`
}

// ErrLockout means applying would cut off the operator's own remote session.
var ErrLockout = errors.New("the policy would cut off this remote session")

// ErrNotConfirmed means no confirmation arrived in time and the previous
// table was restored.
var ErrNotConfirmed = errors.New("not confirmed in time; the previous firewall was restored")

const casTries = 5

// Apply replaces our table with the policy's in one atomic batch (skipped
// when it is already live), then writes the rules file, the boot unit and
// the state record under the root. With a confirmation window it restores
// the previous table when Confirm does not arrive. It returns ErrLockout,
// ErrNotConfirmed, or an error wrapping ErrConcurrentChange.
func Apply(ctx context.Context, nf Netfilter, o Options) (res Result, err error) {
	if err := o.Policy.Validate(); err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if s := o.Session; s != nil && o.ConfirmTimeout <= 0 && !o.Policy.Admits(s.Client, s.ServerPort) {
		return Result{}, fmt.Errorf("apply: %w (client %s, port %d)", ErrLockout, s.Client, s.ServerPort)
	}
	rs := Build(o.Policy)
	want := rs.Table()
	res = Result{SHA256: rs.Hash(), RulesFile: o.Root.Path(RulesPath), UnitFile: o.Root.unitPath()}

	var token string
	if o.ConfirmTimeout > 0 {
		if token, err = o.Root.startPending(o.Session); err != nil {
			return Result{}, err
		}
		defer func() { err = errors.Join(err, o.Root.clearPending()) }()
	}

	prev, changed, err := swap(nf, want)
	if err != nil {
		return Result{}, fmt.Errorf("apply: %w", err)
	}
	res.Changed = changed
	restore := func(cause error) error {
		if !changed {
			return cause
		}
		if _, _, rerr := swap(nf, prev); rerr != nil {
			return errors.Join(cause, fmt.Errorf("restore previous firewall: %w", rerr))
		}
		fmt.Fprintln(o.Log, "restored the previous firewall")
		return cause
	}

	if o.ConfirmTimeout > 0 {
		fmt.Fprintf(o.Log, "firewall applied; run 'qwen-appliance harden confirm' from a NEW connection within %s or it is reverted\n", o.ConfirmTimeout)
		if err := o.Root.waitConfirmed(ctx, token, o.ConfirmTimeout); err != nil {
			return Result{}, restore(err)
		}
		res.Confirmed = true
		fmt.Fprintln(o.Log, "confirmed")
	}

	if err := persist(o.Root, rs, o.Policy, o.Now()); err != nil {
		return Result{}, restore(fmt.Errorf("apply: %w", err))
	}
	return res, nil
}

// swap makes our table equal to want with compare-and-swap, retrying when
// another process commits in between, and returns what was live before.
func swap(nf Netfilter, want *Table) (prev *Table, changed bool, err error) {
	for try := 0; ; try++ {
		st, err := nf.Live()
		if err != nil {
			return nil, false, err
		}
		if len(Diff(st.Table, want)) == 0 {
			return st.Table, false, nil
		}
		err = nf.Replace(st.Gen, want)
		if err == nil {
			return st.Table, true, nil
		}
		if !errors.Is(err, ErrConcurrentChange) || try+1 >= casTries {
			return nil, false, err
		}
	}
}

func persist(root Root, rs Ruleset, p EgressPolicy, now time.Time) error {
	if err := root.writeFile(RulesPath, []byte(rs.Text()), 0o600, 0o750); err != nil {
		return err
	}
	if err := root.writeFile(filepath.Join(UnitDir, FirewallUnit), []byte(FirewallUnitText()), 0o644, 0o755); err != nil {
		return err
	}
	link := root.wantsLink()
	// Made by this Apply, or by an earlier one whose record says so.
	_, err := os.Lstat(filepath.Dir(link))
	made := errors.Is(err, fs.ErrNotExist)
	if prev, err := LoadRecord(root); err == nil && prev.WantsDirMade {
		made = true
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Symlink(filepath.Join(UnitDir, FirewallUnit), link); err != nil {
		return fmt.Errorf("enable %s: %w", FirewallUnit, err)
	}
	rec, err := json.MarshalIndent(Record{Version: 1, Policy: p, SHA256: rs.Hash(), RulesFile: RulesPath, AppliedAt: now.UTC(), WantsDirMade: made}, "", "  ")
	if err != nil {
		return err
	}
	return root.writeFile(StatePath, append(rec, '\n'), 0o600, 0o750)
}

// Remove deletes our table (only ours) and the files Apply wrote, which
// restores the host's firewall to what it was before harden. The
// sysinit.target.wants directory goes too when Apply made it (its record
// says so) and nothing else is in it.
func Remove(nf Netfilter, root Root) error {
	if _, _, err := swap(nf, nil); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	rec, _ := LoadRecord(root) // none, or unreadable: no directory is ours
	var errs []error
	for _, p := range []string{root.Path(RulesPath), root.wantsLink(), root.unitPath(), root.Path(StatePath)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove: %w", err))
		}
	}
	if rec.WantsDirMade {
		dir := filepath.Dir(root.wantsLink())
		if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
			if err := os.Remove(dir); err != nil {
				errs = append(errs, fmt.Errorf("remove: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
