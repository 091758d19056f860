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
	ids, err := CreateIdentity(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	id, rt := ids.Gateway, ids.Runtime
	if !id.Created || id.UID == 0 || id.GID == 0 || !rt.Created || rt.UID == 0 || rt.GID == 0 {
		t.Fatalf("identities %+v", ids)
	}
	// Two accounts, each with a group of its own: the runtime is not in
	// the gateway's group, so it cannot read what that group may.
	if id.UID == rt.UID || id.GID == rt.GID || id.User != ServiceUser || rt.User != RuntimeUser {
		t.Fatalf("gateway %+v and runtime %+v are not separate", id, rt)
	}
	passwd, _ := os.ReadFile(root.Path("/etc/passwd"))
	as, err := parseAccounts(passwd, 7)
	if err != nil {
		t.Fatal(err)
	}
	group, _ := os.ReadFile(root.Path("/etc/group"))
	gs, err := parseAccounts(group, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ServiceUser, RuntimeUser} {
		u, ok := findAccount(as, name)
		if !ok || u.Shell != "/usr/sbin/nologin" || u.Home != "/nonexistent" || u.ID >= 1000 {
			t.Fatalf("account %+v in\n%s", u, passwd)
		}
		if g, ok := findAccount(gs, name); !ok || g.ID != u.GID {
			t.Fatalf("group %+v, user gid %d", g, u.GID)
		}
	}
	if strings.Contains(string(group), ":"+RuntimeUser) || strings.Contains(string(group), ","+RuntimeUser) {
		t.Fatalf("%s is a member of another group:\n%s", RuntimeUser, group)
	}
	for _, d := range Dirs {
		fi, err := os.Stat(root.Path(d.Path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID, wantGID := 0, 0
		switch d.Owner {
		case ServiceUser:
			wantUID = id.UID
		case RuntimeUser:
			wantUID = rt.UID
		}
		switch d.Group {
		case ServiceUser:
			wantGID = id.GID
		case RuntimeUser:
			wantGID = rt.GID
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
	if again.Gateway.Created || again.Gateway.UID != id.UID || again.Runtime.Created || again.Runtime.UID != rt.UID {
		t.Errorf("second run: %+v", again)
	}
	if fi, _ := os.Stat(root.Path(Dirs[3].Path)); fi.Mode().Perm() != Dirs[3].Mode {
		t.Errorf("mode not restored: %v", fi.Mode().Perm())
	}
	if now, _ := os.ReadFile("/etc/passwd"); string(now) != string(realPasswd) || strings.Contains(string(now), ServiceUser+":x") && !strings.Contains(string(realPasswd), ServiceUser+":x") {
		t.Fatal("the real /etc/passwd changed")
	}

	// DeleteUser removes each account and its group; a second time is a no-op.
	for _, name := range []string{RuntimeUser, ServiceUser} {
		for range 2 {
			if err := DeleteUser(context.Background(), root, name); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok, _ := lookupUser(root, name); ok {
			t.Errorf("user %s survived DeleteUser", name)
		}
		if _, ok, _ := lookupGroup(root, name); ok {
			t.Errorf("group %s survived DeleteUser", name)
		}
	}
	if now, _ := os.ReadFile("/etc/passwd"); string(now) != string(realPasswd) {
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
