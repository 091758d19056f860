//go:build linux

package kb

import (
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tetratelabs/wazero/experimental"
)

// pdfMemory gives each PDFium instance a linear memory reserved at its
// full cap with mmap, outside the Go heap: the kernel backs only the pages
// the engine touches, growing never copies, and an instance's memory is
// unmapped once it is done. (wazero's default grows a Go slice by copying,
// which holds two memories for a moment and leaves the garbage collector
// to return the old one: a bomb's peak was several times the cap.)
var pdfMemory experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
	buf, err := unix.Mmap(-1, 0, int(max), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	return &mmapMemory{buf: buf}
})

// retired holds the memories of closed instances until releasePDFMemory:
// an instance killed at its deadline is closed while its call may still be
// running, and unmapping under it would fault the whole process.
var retired struct {
	sync.Mutex
	bufs [][]byte
}

type mmapMemory struct{ buf []byte }

func (m *mmapMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil // memory.grow fails; PDFium stops with an error
	}
	return m.buf[:size]
}

func (m *mmapMemory) Free() {
	retired.Lock()
	retired.bufs = append(retired.bufs, m.buf)
	retired.Unlock()
	m.buf = nil
}

// releasePDFMemory unmaps the memories of closed instances. The caller
// makes sure no call into an instance is running (extractPDF holds pdfMu).
func releasePDFMemory() {
	retired.Lock()
	defer retired.Unlock()
	for _, b := range retired.bufs {
		unix.Munmap(b)
	}
	retired.bufs = nil
}
