package harden

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Dir is one directory the services use, with its required owner and mode.
// Owner and Group are "root", ServiceUser or RuntimeUser.
type Dir struct {
	Path  string      `json:"path"`
	Owner string      `json:"owner"`
	Group string      `json:"group"`
	Mode  fs.FileMode `json:"mode"`
}

// Dirs are the appliance's directories. Configuration is writable by root
// and listable by the gateway's group; state and logs (the audit log) are
// private to the gateway. /etc/qwen-appliance and /var/lib/qwen-appliance
// may be passed through by anyone (0751, no listing), so the runtime reaches
// the trusted public keys and the model store below them; every secret
// inside (tokens, the audit and TLS keys, the store key) has a mode of its
// own that keeps the runtime out.
var Dirs = []Dir{
	{Path: "/etc/qwen-appliance", Owner: "root", Group: ServiceUser, Mode: 0o751},
	{Path: "/var/lib/qwen-appliance", Owner: "root", Group: ServiceUser, Mode: 0o751},
	{Path: "/var/lib/qwen-appliance/models", Owner: "root", Group: RuntimeUser, Mode: 0o750},
	{Path: "/var/lib/qwen-appliance/state", Owner: ServiceUser, Group: ServiceUser, Mode: 0o700},
	{Path: "/var/log/qwen-appliance", Owner: ServiceUser, Group: ServiceUser, Mode: 0o700},
}

// Identity is one service account as created.
type Identity struct {
	User    string `json:"user"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Created bool   `json:"created"` // false: it already existed
	// Ours says the account is one qwen-appliance made (created now, or by
	// an earlier run: its comment is one of CreateUser's), which uninstall
	// may remove.
	Ours bool  `json:"ours"`
	Dirs []Dir `json:"dirs,omitempty"`
}

// Identities are the two service accounts: the gateway (ServiceUser), the
// only one that holds secrets, and the runtime (RuntimeUser), which holds
// none.
type Identities struct {
	Gateway Identity `json:"gateway"`
	Runtime Identity `json:"runtime"`
	Dirs    []Dir    `json:"dirs"`
}

// CreateIdentity makes the ServiceUser and RuntimeUser system accounts and
// their groups (see CreateUser), then creates Dirs under root with their
// owners and modes, and corrects them where they exist. Running it twice
// changes nothing the second time. It refuses two accounts that share a uid
// or a group: the separation would then be a fiction.
func CreateIdentity(ctx context.Context, root Root) (Identities, error) {
	var ids Identities
	var err error
	if ids.Gateway, err = CreateUser(ctx, root, ServiceUser, "qwen-appliance gateway"); err != nil {
		return Identities{}, err
	}
	if ids.Runtime, err = CreateUser(ctx, root, RuntimeUser, "qwen-appliance inference runtime"); err != nil {
		return Identities{}, err
	}
	if ids.Gateway.UID == ids.Runtime.UID || ids.Gateway.GID == ids.Runtime.GID {
		return Identities{}, fmt.Errorf("users %s and %s share uid %d/%d or gid %d/%d; give each its own (the runtime must not hold the gateway's secrets)",
			ServiceUser, RuntimeUser, ids.Gateway.UID, ids.Runtime.UID, ids.Gateway.GID, ids.Runtime.GID)
	}
	for _, d := range Dirs {
		if err := ensureDir(root, d, ids); err != nil {
			return Identities{}, err
		}
		ids.Dirs = append(ids.Dirs, d)
	}
	return ids, nil
}

// CreateUser makes name a system account with a group of its own (no login
// shell, no home) with useradd, under root via useradd --prefix, which edits
// ROOT/etc/passwd and friends without chroot, PAM or NSS. An existing
// account is reused (Created false) unless it has a login shell.
func CreateUser(ctx context.Context, root Root, name, comment string) (Identity, error) {
	id := Identity{User: name}
	u, ok, err := lookupUser(root, name)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", comment}
		if root != "" && root != "/" {
			if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
				return Identity{}, err
			}
			args = append(args, "--prefix", string(root))
		}
		if _, ok, err := lookupGroup(root, name); err == nil && ok {
			// Left behind by userdel or made by hand: join it, since
			// --user-group would refuse.
			args[1] = "--gid=" + name
		}
		args = append(args, name)
		out, err := exec.CommandContext(ctx, "useradd", args...).CombinedOutput()
		if err != nil {
			return Identity{}, fmt.Errorf("useradd %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		id.Created = true
		if u, ok, err = lookupUser(root, name); err != nil {
			return Identity{}, err
		} else if !ok {
			return Identity{}, fmt.Errorf("useradd succeeded but %s has no %s", root.Path("/etc/passwd"), name)
		}
	}
	if u.Shell != "/usr/sbin/nologin" && u.Shell != "/bin/false" {
		return Identity{}, fmt.Errorf("user %s exists with login shell %q; want /usr/sbin/nologin (usermod --shell /usr/sbin/nologin %s)", name, u.Shell, name)
	}
	if u.ID == 0 || u.GID == 0 {
		return Identity{}, fmt.Errorf("user %s has uid %d, gid %d: a service account must not be root", name, u.ID, u.GID)
	}
	id.UID, id.GID = u.ID, u.GID
	id.Ours = id.Created || strings.HasPrefix(u.Comment, "qwen-appliance ")
	return id, nil
}

// DeleteUser removes a service account and its own group (userdel, with
// --prefix under root), and the group with groupdel where userdel left it.
// An account that does not exist is not an error.
func DeleteUser(ctx context.Context, root Root, name string) error {
	prefix := func(args ...string) []string {
		if root != "" && root != "/" {
			return append([]string{"--prefix", string(root)}, args...)
		}
		return args
	}
	if _, ok, err := lookupUser(root, name); err != nil {
		return err
	} else if ok {
		if out, err := exec.CommandContext(ctx, "userdel", prefix(name)...).CombinedOutput(); err != nil {
			return fmt.Errorf("userdel %s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
	}
	if _, ok, err := lookupGroup(root, name); err != nil {
		return err
	} else if ok {
		if out, err := exec.CommandContext(ctx, "groupdel", prefix(name)...).CombinedOutput(); err != nil {
			return fmt.Errorf("groupdel %s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// AccountExists reports whether the account name and a group of that name
// exist under root (ROOT/etc/passwd and ROOT/etc/group).
func AccountExists(root Root, name string) (user, group bool, err error) {
	if _, user, err = lookupUser(root, name); err != nil {
		return false, false, err
	}
	if _, group, err = lookupGroup(root, name); err != nil {
		return false, false, err
	}
	return user, group, nil
}

func lookupUser(root Root, name string) (account, bool, error) {
	return lookupAccount(root.Path("/etc/passwd"), 7, name)
}

func lookupGroup(root Root, name string) (account, bool, error) {
	return lookupAccount(root.Path("/etc/group"), 4, name)
}

func lookupAccount(path string, fields int, name string) (account, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return account{}, false, nil
	}
	if err != nil {
		return account{}, false, err
	}
	as, err := parseAccounts(data, fields)
	if err != nil {
		return account{}, false, fmt.Errorf("%s: %w", path, err)
	}
	a, ok := findAccount(as, name)
	return a, ok, nil
}

func ensureDir(root Root, d Dir, ids Identities) error {
	p := root.Path(d.Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(p, d.Mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", p)
	}
	uid := func(name string) int {
		switch name {
		case ServiceUser:
			return ids.Gateway.UID
		case RuntimeUser:
			return ids.Runtime.UID
		}
		return 0
	}
	gid := func(name string) int {
		switch name {
		case ServiceUser:
			return ids.Gateway.GID
		case RuntimeUser:
			return ids.Runtime.GID
		}
		return 0
	}
	if err := os.Lchown(p, uid(d.Owner), gid(d.Group)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if err := os.Chmod(p, d.Mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}
