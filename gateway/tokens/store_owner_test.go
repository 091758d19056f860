//go:build unix

package tokens

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUpdateKeepsOwner: "tokens create" run by root on an installed host
// leaves the token file to the gateway's user, which must read it.
func TestUpdateKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	p := filepath.Join(t.TempDir(), "tokens.json")
	if err := (&Store{}).Save(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := Update(p, func(*Store) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o600 {
		t.Errorf("after an update: owner %d:%d mode %04o, want 65534:65534 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
