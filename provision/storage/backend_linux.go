//go:build linux

package storage

import "fmt"

func newBackend(b Backend, opts Options) (backend, error) {
	switch b {
	case BackendFscrypt, "":
		k := opts.kernel
		if k == nil {
			k = realKernel{}
		}
		return &fscryptBackend{k: k}, nil
	case BackendLUKS:
		cs := opts.Cryptsetup
		if cs == nil {
			cs = ExecCryptsetup{}
		}
		return &luksBackend{cs: cs}, nil
	}
	return nil, fmt.Errorf("backend %q is not fscrypt or luks", b)
}
