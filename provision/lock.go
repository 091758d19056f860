package provision

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

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
			holder := "unknown"
			if pid := flock.Holder(p); pid > 0 {
				holder = strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("%w (pid %s holds %s)", ErrBusy, holder, p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// Nothing is written into the file: the kernel knows the holder
	// (/proc/locks), and a refused install leaves every file as it was.
	return &hostLock{f: f, path: p}, nil
}

// release drops the lock. Closing the descriptor is what releases it.
func (k *hostLock) release() error { return k.f.Close() }
