package harden

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestCreateIdentity runs the real useradd --prefix against a temporary
// root and checks the account, the directories and that a second run
// changes nothing. The real /etc is never touched.
func TestCreateIdentity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for useradd and chown")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed")
	}
	realPasswd, _ := os.ReadFile("/etc/passwd")
	root := Root(t.TempDir())
	if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/passwd"), []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := CreateIdentity(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Created || id.UID == 0 || id.GID == 0 {
		t.Fatalf("identity %+v", id)
	}
	passwd, _ := os.ReadFile(root.Path("/etc/passwd"))
	as, err := parseAccounts(passwd, 7)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := findAccount(as, ServiceUser)
	if !ok || u.Shell != "/usr/sbin/nologin" || u.Home != "/nonexistent" || u.ID >= 1000 {
		t.Fatalf("account %+v in\n%s", u, passwd)
	}
	group, _ := os.ReadFile(root.Path("/etc/group"))
	gs, err := parseAccounts(group, 4)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := findAccount(gs, ServiceUser); !ok || g.ID != u.GID {
		t.Fatalf("group %+v, user gid %d", g, u.GID)
	}
	for _, d := range Dirs {
		fi, err := os.Stat(root.Path(d.Path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID, wantGID := 0, 0
		if d.Owner == ServiceUser {
			wantUID = id.UID
		}
		if d.Group == ServiceUser {
			wantGID = id.GID
		}
		if fi.Mode().Perm() != d.Mode || int(st.Uid) != wantUID || int(st.Gid) != wantGID {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", d.Path, fi.Mode().Perm(), st.Uid, st.Gid, d.Mode, wantUID, wantGID)
		}
	}
	// A loosened directory is tightened again, and the account is reused.
	if err := os.Chmod(root.Path(Dirs[3].Path), 0o777); err != nil {
		t.Fatal(err)
	}
	again, err := CreateIdentity(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.UID != id.UID {
		t.Errorf("second run: %+v", again)
	}
	if fi, _ := os.Stat(root.Path(Dirs[3].Path)); fi.Mode().Perm() != Dirs[3].Mode {
		t.Errorf("mode not restored: %v", fi.Mode().Perm())
	}
	if now, _ := os.ReadFile("/etc/passwd"); string(now) != string(realPasswd) || strings.Contains(string(now), ServiceUser+":x") && !strings.Contains(string(realPasswd), ServiceUser+":x") {
		t.Fatal("the real /etc/passwd changed")
	}
}

func TestCreateIdentityRefusesLoginShell(t *testing.T) {
	root := Root(t.TempDir())
	if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path("/etc/passwd"), []byte(ServiceUser+":x:990:990::/home/q:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateIdentity(context.Background(), root); err == nil || !strings.Contains(err.Error(), "login shell") {
		t.Fatalf("got %v, want a login-shell error", err)
	}
}
