//go:build linux

package storage

import (
	"fmt"

	"github.com/qwen-appliance/qwen-appliance/provision/storage/fscryptmeta"
)

func newBackend(b Backend, opts Options) (backend, error) {
	switch b {
	case BackendFscrypt, "":
		k := opts.kernel
		if k == nil {
			k = realKernel{}
		}
		tm := opts.toolMount
		if tm == nil {
			tm = fscryptmeta.FindMount
		}
		return &fscryptBackend{k: k, toolMount: tm}, nil
	case BackendLUKS:
		cs := opts.cryptsetup
		if cs == nil {
			cs = execCryptsetup{}
		}
		return &luksBackend{cs: cs}, nil
	}
	return nil, fmt.Errorf("backend %q is not fscrypt or luks", b)
}
