package harden

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The confirmation window works like iptables-apply: apply writes a pending
// token, the operator proves that a new connection still gets in by running
// `harden confirm` over it, which copies the token to the confirmed marker.

// ErrNothingPending means no apply is waiting for confirmation.
var ErrNothingPending = errors.New("no firewall change is waiting for confirmation")

// ErrSameSession means confirm ran over the very session apply ran over,
// which proves nothing about new connections.
var ErrSameSession = errors.New("confirm must come from a new connection, not the one apply runs over")

type pending struct {
	Token   string   `json:"token"`
	Session *Session `json:"session,omitempty"`
}

func (r Root) pendingPath() string   { return r.Path(filepath.Join(RuntimeDir, "harden-pending")) }
func (r Root) confirmedPath() string { return r.Path(filepath.Join(RuntimeDir, "harden-confirmed")) }

func (r Root) startPending(s *Session) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	data, err := json.Marshal(pending{Token: token, Session: s})
	if err != nil {
		return "", err
	}
	if err := os.Remove(r.confirmedPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := r.writeFile(filepath.Join(RuntimeDir, "harden-pending"), data, 0o600, 0o700); err != nil {
		return "", fmt.Errorf("start confirmation window: %w", err)
	}
	return token, nil
}

func (r Root) clearPending() error {
	var errs []error
	for _, p := range []string{r.pendingPath(), r.confirmedPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r Root) waitConfirmed(ctx context.Context, token string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if data, err := os.ReadFile(r.confirmedPath()); err == nil && string(data) == token {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%w (waited %s)", ErrNotConfirmed, timeout)
		case <-tick.C:
		}
	}
}

// Confirm accepts the firewall a waiting Apply put in place. session is the
// connection confirm runs over (nil for a local console); it must differ
// from the one apply ran over. Returns ErrNothingPending or ErrSameSession.
func Confirm(root Root, session *Session) error {
	data, err := os.ReadFile(root.pendingPath())
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNothingPending
	}
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	var p pending
	if err := json.Unmarshal(data, &p); err != nil || p.Token == "" {
		return fmt.Errorf("confirm: %s is damaged", root.pendingPath())
	}
	if session != nil && p.Session != nil && *session == *p.Session {
		return ErrSameSession
	}
	return root.writeFile(filepath.Join(RuntimeDir, "harden-confirmed"), []byte(p.Token), 0o600, 0o700)
}
