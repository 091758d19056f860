package provision

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/internal/flock"
)

// ErrBusy is returned (wrapped) when another install, upgrade, rollback or
// uninstall is working on the same installation.
var ErrBusy = errors.New("another install, rollback or uninstall is running")

// LockFile is the lock install, rollback and uninstall hold while they
// change the host, inside StateDir.
const LockFile = "install.lock"

// hostLock is the installation's exclusive lock (flock on
// ROOT/var/lib/qwen-appliance/install.lock). The kernel drops it when the
// holder exits, however it exits, so a crashed run never leaves it stuck.
type hostLock struct {
	f    *os.File
	path string
}

func (l layout) lockPath() string { return l.path(filepath.Join(StateDir, LockFile)) }

// lock takes the installation's lock without waiting: a second run fails at
// once with ErrBusy naming the holder's PID, rather than queueing behind an
// install that may take an hour.
func (l layout) lock() (*hostLock, error) {
	p := l.lockPath()
	if err := mkdirPrivate(filepath.Dir(p)); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := flock.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, flock.ErrLocked) {
			data, _ := os.ReadFile(p)
			holder := strings.TrimSpace(string(data))
			if _, err := strconv.Atoi(holder); err != nil {
				holder = "unknown"
			}
			return nil, fmt.Errorf("%w (pid %s holds %s)", ErrBusy, holder, p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// The holder's PID, for the message a second run prints.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &hostLock{f: f, path: p}, nil
}

// release drops the lock. Closing the descriptor is what releases it.
func (k *hostLock) release() error { return k.f.Close() }
