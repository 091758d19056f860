package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// ErrNoPrevious is returned by Rollback when no earlier release is recorded.
var ErrNoPrevious = errors.New("no previous release to roll back to")

// RollbackOptions say where the installation is.
type RollbackOptions struct {
	Root         string
	ReadyTimeout time.Duration // 5 minutes when 0
	Log          io.Writer

	sys *system // the host when nil (tests pass fakes)
}

// Rollback puts the previous release back into service: its copy in the
// store is verified against its signed manifest, its runtime started beside
// the current one and proven, the gateway switched to it atomically, and the
// current runtime stopped; the two releases then swap places in the state
// record, so a second rollback returns to where it started. The last
// accepted version does not go down: rollback is an operator's explicit
// act on bytes already approved for this host. A failure leaves the current
// release serving.
func Rollback(ctx context.Context, o RollbackOptions) (*state.State, error) {
	root := o.Root
	if root == "" {
		root = "/"
	}
	cur, err := state.Load(root)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	if cur.Previous == nil {
		return nil, fmt.Errorf("rollback: %w", ErrNoPrevious)
	}
	in, err := newInstaller(Options{Bundle: cur.Previous.Dir, TrustedKeys: cur.TrustedKeys, Root: root,
		Store: cur.Store.Dir, ReadyTimeout: o.ReadyTimeout, Log: o.Log, sys: o.sys})
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	lk, err := in.l.lock()
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	defer lk.release()
	// Re-read under the lock: an install may have finished meanwhile.
	if cur, err = state.Load(root); err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	if cur.Previous == nil {
		return nil, fmt.Errorf("rollback: %w", ErrNoPrevious)
	}
	in.prev = cur
	if err := in.recover(); err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	in.removeLeftovers()
	in.serviceExe = in.l.path(ProgramPath)
	keys, err := manifests.LoadPublicKeys(cur.TrustedKeys...)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	prev := *cur.Previous
	s, err := (manifests.Verifier{Trusted: keys, AllowExpired: true}).Open(prev.Dir)
	if err != nil {
		return nil, fmt.Errorf("rollback: previous release %s: %w", prev.Dir, err)
	}
	if sum := sha256.Sum256(s.Raw); hex.EncodeToString(sum[:]) != prev.ManifestSHA256 {
		return nil, fmt.Errorf("rollback: %w: the manifest in %s is not the one recorded for %s version %d", manifests.ErrVerification, prev.Dir, prev.Name, prev.Version)
	}
	if err := manifests.CheckFiles(ctx, prev.Dir, s.Manifest, manifests.CheckOptions{StoreModes: true, IgnoreExtra: []string{"state"}}); err != nil {
		return nil, fmt.Errorf("rollback: previous release %s: %w", prev.Dir, err)
	}
	in.logf("rolling back from %s version %d to version %d", cur.Bundle.Name, cur.Bundle.Version, prev.Version)

	next := *cur
	next.Bundle, next.Previous = prev, &cur.Bundle
	next.Files = maps.Clone(cur.Files)
	ids := harden.Identities{Gateway: harden.Identity{User: cur.ServiceUser, UID: cur.ServiceUID, GID: cur.ServiceGID}}
	ids.Runtime = harden.Identity{User: cur.RuntimeUser, UID: cur.RuntimeUID, GID: cur.RuntimeGID}
	if cur.RuntimeUser == "" {
		// Recorded before the runtime had a user of its own; 'install'
		// migrates, rollback keeps what runs.
		ids.Runtime = ids.Gateway
	}
	if err := in.j.begin(); err != nil {
		return nil, err
	}
	if err := in.switchTo(ctx, &next, s.Manifest, ids); err != nil {
		in.logf("failed: %v; undoing", err)
		return nil, errors.Join(fmt.Errorf("rollback: %w", err), in.undo())
	}
	next.Updated = in.now()
	next.RolledBack = &next.Updated
	if err := state.Save(root, &next); err != nil {
		return nil, err
	}
	in.logf("serving %s version %d again", prev.Name, prev.Version)
	return &next, in.j.finish()
}
