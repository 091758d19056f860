package harden

import (
	"context"
	"os"
	"os/exec"
	"testing"
)

// uninstall's userdel leaves the service group behind; creating the
// account again joins it instead of failing on --user-group.
func TestCreateIdentityGroupLeftBehind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for useradd --prefix")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed")
	}
	root := Root(t.TempDir())
	if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/group"), []byte("root:x:0:\n"+ServiceUser+":x:987:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := CreateIdentity(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if id.Gateway.GID != 987 {
		t.Errorf("gid %d, want the existing group's 987", id.Gateway.GID)
	}
}

// AccountExists reads the account and its group separately, so install can
// tell a group left behind from an account of its own.
func TestAccountExists(t *testing.T) {
	root := Root(t.TempDir())
	if u, g, err := AccountExists(root, ServiceUser); err != nil || u || g {
		t.Fatalf("no /etc: user %v group %v err %v, want neither", u, g, err)
	}
	if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/group"), []byte("root:x:0:\n"+ServiceUser+":x:987:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if u, g, err := AccountExists(root, ServiceUser); err != nil || u || !g {
		t.Fatalf("group only: user %v group %v err %v", u, g, err)
	}
	if u, g, err := AccountExists(root, "root"); err != nil || !u || !g {
		t.Fatalf("root: user %v group %v err %v", u, g, err)
	}
}
