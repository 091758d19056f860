//go:build !linux

package storage

import "regexp"

// fscryptKernel exists only on Linux.
type fscryptKernel interface{}

var mapperRE = regexp.MustCompile(`^qwen-store-[0-9a-f]{16}$`)

func newBackend(Backend, Options) (backend, error) { return nil, ErrUnsupported }
