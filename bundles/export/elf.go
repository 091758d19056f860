package export

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// libDirs are where the dynamic loader of a glibc system finds libraries,
// searched in this order for each DT_NEEDED name.
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// binaryFacts is what the gateway image needs to know about the binary:
// its architecture (the image's platform) and, when it is dynamically
// linked (go-nvml needs cgo), the loader and libraries it must carry.
type binaryFacts struct {
	Arch string // GOARCH spelling: amd64, arm64
	// Libs maps the path inside the image (where the loader looks) to the
	// file on this machine that holds it.
	Libs map[string]string
}

// readBinary inspects an ELF executable and resolves its loader and the
// shared libraries it needs, transitively, on this machine.
func readBinary(bin string) (binaryFacts, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return binaryFacts{}, fmt.Errorf("gateway binary %s: not an ELF executable: %w", bin, err)
	}
	defer f.Close()
	facts := binaryFacts{Libs: map[string]string{}}
	switch f.Machine {
	case elf.EM_X86_64:
		facts.Arch = "amd64"
	case elf.EM_AARCH64:
		facts.Arch = "arm64"
	default:
		return facts, fmt.Errorf("gateway binary %s: machine %s is not amd64 or arm64", bin, f.Machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return facts, fmt.Errorf("gateway binary %s: ELF type %s is not an executable", bin, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		buf := make([]byte, p.Filesz)
		if _, err := p.ReadAt(buf, 0); err != nil {
			return facts, fmt.Errorf("gateway binary %s: read its loader name: %w", bin, err)
		}
		interp := strings.TrimRight(string(buf), "\x00")
		real, err := filepath.EvalSymlinks(interp)
		if err != nil {
			return facts, fmt.Errorf("gateway binary %s: its loader %s: %w", bin, interp, err)
		}
		facts.Libs[strings.TrimPrefix(interp, "/")] = real
	}
	if len(facts.Libs) == 0 {
		return facts, nil // static: nothing else to carry
	}
	return facts, addNeeded(f, bin, facts.Libs)
}

// addNeeded adds the DT_NEEDED libraries of f, and theirs, to libs.
func addNeeded(f *elf.File, name string, libs map[string]string) error {
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: read its libraries: %w", name, err)
	}
	for _, lib := range needed {
		if strings.Contains(lib, "/") {
			return fmt.Errorf("%s: needs %q by path; only library names are supported", name, lib)
		}
		found := ""
		for _, d := range libDirs {
			p := filepath.Join(d, lib)
			if _, err := os.Stat(p); err == nil {
				found = p
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s: library %s: %w in %s", name, lib, fs.ErrNotExist, strings.Join(libDirs, ", "))
		}
		inImage := strings.TrimPrefix(found, "/")
		if _, ok := libs[inImage]; ok {
			continue
		}
		real, err := filepath.EvalSymlinks(found)
		if err != nil {
			return fmt.Errorf("%s: library %s: %w", name, lib, err)
		}
		libs[inImage] = real
		lf, err := elf.Open(real)
		if err != nil {
			return fmt.Errorf("%s: library %s: %w", name, real, err)
		}
		err = addNeeded(lf, real, libs)
		lf.Close()
		if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
			return err
		}
	}
	return nil
}
