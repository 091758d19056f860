package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// ManPagePath is where install puts the qwen-appliance(1) manual page, which
// the units' Documentation=man:qwen-appliance(1) names.
const ManPagePath = "/usr/share/man/man1/qwen-appliance.1"

// manPage installs Options.ManPage, when given, and records its hash like
// the other files install writes: a failed first install removes it, repair
// notices it changed or went missing, uninstall removes it.
func (in *installer) manPage(st *state.State) error {
	if len(in.o.ManPage) == 0 {
		return nil
	}
	dst := in.l.path(ManPagePath)
	in.removeIfNew(dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("manual page: %w", err)
	}
	if err := atomicfile.WriteFile(dst, in.o.ManPage, 0o644); err != nil {
		return fmt.Errorf("manual page: %w", err)
	}
	sum := sha256.Sum256(in.o.ManPage)
	st.Files[dst] = hex.EncodeToString(sum[:])
	return nil
}
