package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/fault"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// journal records, while an install attempt runs, the processes it started
// and the admin token it made, so that an attempt killed half-way (kill -9,
// power loss) is cleaned up by the next one. It is removed when the attempt
// ends, successfully or undone.
type journal struct {
	path  string
	Procs []proc.Identity `json:"procs,omitempty"` // with start time and boot id: only these are ever signalled
	PIDs  []int           `json:"pids,omitempty"`  // written by older versions: never signalled
	Units []string        `json:"units,omitempty"` // systemd units, when systemd runs the services
	// AdminToken is the ID of the admin token this attempt made. Its
	// secret reaches the operator only when the attempt succeeds, so a
	// crashed attempt's token is revoked by the next one.
	AdminToken string    `json:"adminToken,omitempty"`
	At         time.Time `json:"at"`
}

func (j *journal) save() error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := mkdirPrivate(filepath.Dir(j.path)); err != nil {
		return err
	}
	return atomicfile.WriteFile(j.path, data, 0o600)
}

func (j *journal) begin() error {
	j.At, j.Procs, j.PIDs, j.Units, j.AdminToken = time.Now().UTC(), nil, nil, nil, ""
	return j.save()
}

func (j *journal) addUnit(name string) error {
	j.Units = append(j.Units, name)
	return j.save()
}

func (j *journal) addProc(id proc.Identity) error {
	j.Procs = append(j.Procs, id)
	return j.save()
}

func (j *journal) setAdminToken(id string) error {
	j.AdminToken = id
	return j.save()
}

func (j *journal) finish() error {
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// recover stops what a crashed attempt started and is not part of the
// recorded installation, and revokes the admin token it made, whose secret
// nobody saw. Files a crashed attempt wrote are overwritten by this one; a
// release copy it left half-done fails its check and is copied again. A
// recorded process is only signalled while its identity (start time, boot)
// still matches: after a power loss its PID belongs to someone else.
func (in *installer) recover() error {
	data, err := os.ReadFile(in.j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var old journal
	if err := json.Unmarshal(data, &old); err != nil {
		in.logf("warning: unreadable journal of an interrupted install (%v); ignoring it", err)
		return in.j.finish()
	}
	at := old.At.Format(time.RFC3339)
	keepUnit := map[string]bool{}
	var keep []proc.Identity
	if in.prev != nil {
		keep = append(keep, identityOf(in.prev.Runtime), identityOf(in.prev.Gateway.Service))
		keepUnit[filepath.Base(in.prev.Runtime.Unit)] = true
		keepUnit[filepath.Base(in.prev.Gateway.Unit)] = true
	}
	for _, u := range old.Units {
		if !keepUnit[u] {
			in.logf("removing unit %s left by the install interrupted at %s", u, at)
			if err := in.sups.units.removeUnit(context.Background(), u); err != nil {
				return err
			}
		}
	}
	for _, id := range old.Procs {
		if slices.Contains(keep, id) {
			continue
		}
		switch err := in.sys.host.Check(id); {
		case errors.Is(err, proc.ErrGone):
		case err != nil:
			in.logf("not stopping pid %d recorded by the install interrupted at %s: %v", id.PID, at, err)
		default:
			in.logf("stopping pid %d left by the install interrupted at %s", id.PID, at)
			if err := in.sys.host.Stop(id, 10*time.Second); err != nil {
				return err
			}
		}
	}
	for _, pid := range old.PIDs {
		in.logf("not stopping pid %d recorded by the install interrupted at %s: recorded without its start time, it cannot be told apart from a later process; stop it by hand if it is still ours", pid, at)
	}
	if old.AdminToken != "" {
		if err := in.revokeUnshown(old.AdminToken, "the install interrupted at "+at); err != nil {
			return err
		}
	}
	return in.j.finish()
}

// revokeUnshown revokes the admin token a crashed attempt made: its secret
// was never printed, so no operator holds it, and a valid token nobody
// holds is one nobody would notice stolen. The next gateway step then
// issues a new one and prints it.
func (in *installer) revokeUnshown(id, madeBy string) error {
	path := in.l.tokens()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the crash came before the token file was written
	}
	if err != nil {
		return fmt.Errorf("recover: tokens: %w", err)
	}
	revoked := false
	err = tokens.Update(path, func(s *tokens.Store) error {
		t, err := s.Revoke(id, in.o.Now())
		revoked = err == nil && t.Revoked != nil
		return err
	})
	if !revoked {
		return nil // never saved (the crash came first)
	}
	if err != nil {
		return fmt.Errorf("recover: revoke the unshown admin token %s: %w", id, err)
	}
	// Saving replaced the file; the gateway's user must still read it.
	uid, gid := ownerOf(fi)
	if err := in.sys.host.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("recover: tokens: %w", err)
	}
	in.logf("revoked admin token %s, made by %s and never shown", id, madeBy)
	return nil
}

// onUndo registers how to reverse a step. Steps register before they act,
// so a step that fails half-way is undone too: every undo must therefore
// accept that its step did nothing, or only part of it.
func (in *installer) onUndo(f func() error) { in.undos = append(in.undos, f) }

// onDone registers f to run once the attempt succeeded (removing what undo
// would have put back).
func (in *installer) onDone(f func()) { in.dones = append(in.dones, f) }

// removeIfNew registers, before a step creates paths, the undo that removes
// those of them that do not exist yet: for each, its topmost missing
// ancestor, so that a failed first install takes away the directories it
// made as well as their files. Paths that exist are left to the step's own
// undo (an installation's files are kept as they are).
func (in *installer) removeIfNew(paths ...string) {
	for _, p := range paths {
		top := newTop(p)
		if top == "" || in.fresh[top] {
			continue
		}
		if in.fresh == nil {
			in.fresh = map[string]bool{}
		}
		in.fresh[top] = true
		in.onUndo(func() error {
			if err := os.RemoveAll(top); err != nil {
				return fmt.Errorf("undo: %w", err)
			}
			return nil
		})
	}
}

// newTop is the topmost missing ancestor of path (path itself when only it
// is missing), or "" when path exists.
func newTop(path string) string {
	top := ""
	for d := filepath.Clean(path); d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
			break
		}
		top = d
	}
	return top
}

// undo reverses this attempt's steps, newest first, and restarts nothing: a
// previous installation's services were only stopped if the attempt got that
// far, in which case they are started again by re-running install with the
// previous bundle (reported in the error).
func (in *installer) undo() error {
	var errs []error
	for i := len(in.undos) - 1; i >= 0; i-- {
		if err := in.undos[i](); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, in.j.finish())
	return errors.Join(errs...)
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// mkdirPrivate makes dir with mode 0700, and any missing parents with 0755
// so that the service user can still reach its own directories beside it.
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// stepDone marks the end of a step. In a binary built with the faultinject
// tag (the tests), fault.KillEnv kills the install here and fault.FailEnv
// fails it, so its undo runs; a production build ignores both.
func (in *installer) stepDone(step string) error {
	return fault.After(in.log, "install", step)
}
