//go:build !linux

package kb

import "github.com/tetratelabs/wazero/experimental"

// pdfMemory is wazero's default elsewhere: a Go slice grown by copying.
var pdfMemory experimental.MemoryAllocator

func releasePDFMemory() {}
