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
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// journal records, while an install attempt runs, the processes it started,
// so that an attempt killed half-way (kill -9, power loss) is cleaned up by
// the next one. It is removed when the attempt ends, successfully or undone.
type journal struct {
	path  string
	PIDs  []int     `json:"pids"`
	Units []string  `json:"units,omitempty"` // systemd units, when systemd runs the services
	At    time.Time `json:"at"`
}

func (j *journal) save() error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := mkdirPrivate(filepath.Dir(j.path)); err != nil {
		return err
	}
	return manifests.WriteFileAtomic(j.path, data, 0o600)
}

func (j *journal) begin() error {
	j.At, j.PIDs, j.Units = time.Now().UTC(), nil, nil
	return j.save()
}

func (j *journal) addUnit(name string) error {
	j.Units = append(j.Units, name)
	return j.save()
}

func (j *journal) addPID(pid int) error {
	j.PIDs = append(j.PIDs, pid)
	return j.save()
}

func (j *journal) finish() error {
	if err := os.Remove(j.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// recover stops what a crashed attempt started and is not part of the
// recorded installation. Files a crashed attempt wrote are overwritten by this
// one; a release copy it left half-done fails its check and is copied again.
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
	keep := map[int]bool{}
	keepUnit := map[string]bool{}
	if in.prev != nil {
		keep[in.prev.Runtime.PID] = true
		keep[in.prev.Gateway.PID] = true
		keepUnit[filepath.Base(in.prev.Runtime.Unit)] = true
		keepUnit[filepath.Base(in.prev.Gateway.Unit)] = true
	}
	for _, u := range old.Units {
		if !keepUnit[u] {
			in.logf("removing unit %s left by the install interrupted at %s", u, old.At.Format(time.RFC3339))
			if err := removeUnit(context.Background(), in.l, u); err != nil {
				return err
			}
		}
	}
	for _, pid := range old.PIDs {
		if !keep[pid] && alive(pid) {
			in.logf("stopping pid %d left by the install interrupted at %s", pid, old.At.Format(time.RFC3339))
			if err := stop(pid, 10*time.Second); err != nil {
				return err
			}
		}
	}
	return in.j.finish()
}

// onUndo registers how to reverse a step this attempt completed.
func (in *installer) onUndo(f func() error) { in.undos = append(in.undos, f) }

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

// FaultEnv names a step after which install kills itself with SIGKILL, as a
// power cut would: the crash-recovery tests set it to prove that running
// install again reaches the same end state. Unset, it does nothing.
const FaultEnv = "QWA_FAULT_AFTER"

// stepDone marks the end of a step for the crash-recovery tests.
func (in *installer) stepDone(step string) {
	if os.Getenv(FaultEnv) == step {
		in.logf("%s=%s: killing this install (SIGKILL) to test crash recovery", FaultEnv, step)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
