//go:build linux

package storage

import (
	"crypto/sha512"
	"os"

	"golang.org/x/sys/unix"
)

// fakeKernel keeps keys and policies in maps, for tests without root or an
// fscrypt filesystem. Identifiers are derived from the key, as the kernel's
// are, so a wrong key gives a wrong identifier.
type fakeKernel struct {
	keys     map[[16]byte]bool
	policies map[string]unix.FscryptPolicyV2
	busy     bool
}

var _ fscryptKernel = (*fakeKernel)(nil)

func newFakeKernel() *fakeKernel {
	return &fakeKernel{keys: map[[16]byte]bool{}, policies: map[string]unix.FscryptPolicyV2{}}
}

func (k *fakeKernel) addKey(_ *os.File, raw []byte) (id [16]byte, err error) {
	sum := sha512.Sum512(raw)
	copy(id[:], sum[:])
	k.keys[id] = true
	return id, nil
}

func (k *fakeKernel) removeKey(_ *os.File, id [16]byte) (bool, error) {
	if !k.keys[id] {
		return false, unix.ENOKEY
	}
	delete(k.keys, id)
	return k.busy, nil
}

func (k *fakeKernel) keyStatus(_ *os.File, id [16]byte) (uint32, error) {
	if k.keys[id] {
		return unix.FSCRYPT_KEY_STATUS_PRESENT, nil
	}
	return unix.FSCRYPT_KEY_STATUS_ABSENT, nil
}

func (k *fakeKernel) setPolicy(dir *os.File, p unix.FscryptPolicyV2) error {
	if !k.keys[p.Master_key_identifier] {
		return unix.ENOKEY
	}
	k.policies[dir.Name()] = p
	return nil
}

func (k *fakeKernel) getPolicy(dir *os.File) (unix.FscryptPolicyV2, error) {
	p, ok := k.policies[dir.Name()]
	if !ok {
		return p, unix.ENODATA
	}
	return p, nil
}
