//go:build linux

package storage

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/qwen-appliance/qwen-appliance/provision/storage/fscryptmeta"
)

// The store is also described in the fscrypt tool's own metadata
// (MOUNT/.fscrypt/policies/KEYID and protectors/DESCRIPTOR), with the
// recovery key as a raw-key protector, so that an operator without this
// program can run `fscrypt unlock DIR --key=FILE` with the 32 bytes of the
// recovery key. The master key is wrapped there as fscrypt wraps it: by a
// random protector key, itself wrapped by the recovery key.

// toolProtectorName is how `fscrypt status` lists the recovery key.
const toolProtectorName = "qwen-appliance recovery key"

// toolDir opens the fscrypt tool's metadata directory of the store's
// filesystem; with create, a missing one is made as `fscrypt setup` would.
func (f *fscryptBackend) toolDir(s *ModelStore, create bool) (fscryptmeta.Dir, error) {
	// The parent is on the store's filesystem (the key ioctls rely on it
	// too) and still there when the store directory was removed.
	mount, err := f.toolMount(filepath.Dir(s.Dir))
	if err != nil {
		// %v: a missing path is not a missing .fscrypt directory.
		return fscryptmeta.Dir{}, fmt.Errorf("%v", err)
	}
	if create {
		return fscryptmeta.Setup(mount)
	}
	return fscryptmeta.Open(mount)
}

// addToolProtector lets the fscrypt tool unlock the store with recovery (the
// 32 decoded bytes of the recovery key): it writes a raw-key protector and
// adds the master key, wrapped for it, to the store's policy file (made when
// missing). It returns the protector's descriptor.
func (f *fscryptBackend) addToolProtector(s *ModelStore, master, recovery []byte) (string, error) {
	d, err := f.toolDir(s, true)
	if err != nil {
		return "", err
	}
	pk := make([]byte, fscryptmeta.InternalKeyLen)
	defer clear(pk)
	rand.Read(pk)
	prot := fscryptmeta.Protector{Descriptor: fscryptmeta.ProtectorDescriptor(pk), Source: fscryptmeta.SourceRawKey, Name: toolProtectorName}
	if prot.WrappedKey, err = fscryptmeta.Wrap(recovery, pk); err != nil {
		return "", err
	}
	wrapped, err := fscryptmeta.Wrap(pk, master)
	if err != nil {
		return "", err
	}
	id := s.Meta.Fscrypt.KeyIdentifier
	pol, err := d.ReadPolicy(id)
	if errors.Is(err, fs.ErrNotExist) {
		pol = &fscryptmeta.Policy{KeyDescriptor: id, Options: fscryptmeta.Options{Padding: int64(s.Meta.Fscrypt.Padding),
			Contents: fscryptmeta.ModeAES256XTS, Filenames: fscryptmeta.ModeAES256CTS, PolicyVersion: 2}}
	} else if err != nil {
		return "", err
	}
	pol.WrappedKeys = append(pol.WrappedKeys, fscryptmeta.PolicyKey{ProtectorDescriptor: prot.Descriptor, WrappedKey: wrapped})
	// The protector first: a policy file never names a missing protector.
	if err := d.WriteProtector(&prot); err != nil {
		return "", err
	}
	if err := d.WritePolicy(pol); err != nil {
		fscryptmeta.Destroy(d.ProtectorPath(prot.Descriptor))
		return "", err
	}
	return prot.Descriptor, nil
}

// removeToolProtectors takes the named protectors out of the store's policy
// file and destroys their files; a policy file left without protectors is
// destroyed too, and with all it is destroyed whatever it holds (erase).
// Protectors an operator added to the policy with the fscrypt tool stay
// otherwise.
func (f *fscryptBackend) removeToolProtectors(s *ModelStore, descs []string, all bool) error {
	d, err := f.toolDir(s, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	id := s.Meta.Fscrypt.KeyIdentifier
	if all {
		err = fscryptmeta.Destroy(d.PolicyPath(id))
	} else if pol, rerr := d.ReadPolicy(id); rerr == nil {
		pol.WrappedKeys = slices.DeleteFunc(pol.WrappedKeys, func(k fscryptmeta.PolicyKey) bool {
			return slices.Contains(descs, k.ProtectorDescriptor)
		})
		if len(pol.WrappedKeys) == 0 {
			err = fscryptmeta.Destroy(d.PolicyPath(id))
		} else {
			err = d.WritePolicy(pol)
		}
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		err = rerr
	}
	if err != nil {
		return err
	}
	for _, desc := range descs {
		if err := fscryptmeta.Destroy(d.ProtectorPath(desc)); err != nil {
			return err
		}
	}
	return nil
}

// toolProtectors lists the descriptors the metadata records.
func toolProtectors(m *Metadata) []string {
	var descs []string
	for _, p := range m.Protectors {
		if p.FscryptProtector != "" {
			descs = append(descs, p.FscryptProtector)
		}
	}
	return descs
}

// toolStatus says whether the fscrypt tool can unlock the store: the policy
// file's path when it holds every recorded protector and each protector file
// reads back, or why not.
func (f *fscryptBackend) toolStatus(s *ModelStore) string {
	descs := toolProtectors(s.Meta)
	if len(descs) == 0 {
		return "none (no recovery key protector in the fscrypt tool's metadata)"
	}
	d, err := f.toolDir(s, false)
	if err != nil {
		return "broken: " + err.Error()
	}
	pol, err := d.ReadPolicy(s.Meta.Fscrypt.KeyIdentifier)
	if err != nil {
		return "broken: " + err.Error()
	}
	for _, desc := range descs {
		if !slices.ContainsFunc(pol.WrappedKeys, func(k fscryptmeta.PolicyKey) bool { return k.ProtectorDescriptor == desc }) {
			return fmt.Sprintf("broken: %s does not list protector %s", d.PolicyPath(s.Meta.Fscrypt.KeyIdentifier), desc)
		}
		if _, err := d.ReadProtector(desc); err != nil {
			return "broken: " + err.Error()
		}
	}
	return d.PolicyPath(s.Meta.Fscrypt.KeyIdentifier)
}
