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
// Owner and Group are "root" or ServiceUser.
type Dir struct {
	Path  string      `json:"path"`
	Owner string      `json:"owner"`
	Group string      `json:"group"`
	Mode  fs.FileMode `json:"mode"`
}

// Dirs are the appliance's directories: configuration and models readable
// by the service group but writable only by root, state and logs private to
// the service.
var Dirs = []Dir{
	{Path: "/etc/qwen-appliance", Owner: "root", Group: ServiceUser, Mode: 0o750},
	{Path: "/var/lib/qwen-appliance", Owner: "root", Group: ServiceUser, Mode: 0o750},
	{Path: "/var/lib/qwen-appliance/models", Owner: "root", Group: ServiceUser, Mode: 0o750},
	{Path: "/var/lib/qwen-appliance/state", Owner: ServiceUser, Group: ServiceUser, Mode: 0o700},
	{Path: "/var/log/qwen-appliance", Owner: ServiceUser, Group: ServiceUser, Mode: 0o700},
}

// Identity is the service account as created.
type Identity struct {
	User    string `json:"user"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Created bool   `json:"created"` // false: it already existed
	Dirs    []Dir  `json:"dirs"`
}

// CreateIdentity makes the ServiceUser system account and group (no login
// shell, no home) with useradd, under root via useradd --prefix, which
// edits ROOT/etc/passwd and friends without chroot, PAM or NSS; then it
// creates Dirs under root with their owners and modes, and corrects them
// where they exist. Running it twice changes nothing the second time.
func CreateIdentity(ctx context.Context, root Root) (Identity, error) {
	id := Identity{User: ServiceUser}
	u, ok, err := lookupUser(root)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", "qwen-appliance services"}
		if root != "" && root != "/" {
			if err := os.MkdirAll(root.Path("/etc"), 0o755); err != nil {
				return Identity{}, err
			}
			args = append(args, "--prefix", string(root))
		}
		if groupExists(root) {
			// Left behind by userdel (uninstall) or made by hand: join it,
			// since --user-group would refuse.
			args[1] = "--gid=" + ServiceUser
		}
		args = append(args, ServiceUser)
		out, err := exec.CommandContext(ctx, "useradd", args...).CombinedOutput()
		if err != nil {
			return Identity{}, fmt.Errorf("useradd %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		id.Created = true
		if u, ok, err = lookupUser(root); err != nil {
			return Identity{}, err
		} else if !ok {
			return Identity{}, fmt.Errorf("useradd succeeded but %s has no %s", root.Path("/etc/passwd"), ServiceUser)
		}
	}
	if u.Shell != "/usr/sbin/nologin" && u.Shell != "/bin/false" {
		return Identity{}, fmt.Errorf("user %s exists with login shell %q; want /usr/sbin/nologin (usermod --shell /usr/sbin/nologin %s)", ServiceUser, u.Shell, ServiceUser)
	}
	id.UID, id.GID = u.ID, u.GID
	for _, d := range Dirs {
		if err := ensureDir(root, d, id); err != nil {
			return Identity{}, err
		}
		id.Dirs = append(id.Dirs, d)
	}
	return id, nil
}

// groupExists reports whether ROOT/etc/group already has ServiceUser.
func groupExists(root Root) bool {
	data, err := os.ReadFile(root.Path("/etc/group"))
	if err != nil {
		return false
	}
	as, err := parseAccounts(data, 4)
	if err != nil {
		return false
	}
	_, ok := findAccount(as, ServiceUser)
	return ok
}

func lookupUser(root Root) (account, bool, error) {
	path := root.Path("/etc/passwd")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return account{}, false, nil
	}
	if err != nil {
		return account{}, false, err
	}
	as, err := parseAccounts(data, 7)
	if err != nil {
		return account{}, false, fmt.Errorf("%s: %w", path, err)
	}
	a, ok := findAccount(as, ServiceUser)
	return a, ok, nil
}

func ensureDir(root Root, d Dir, id Identity) error {
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
	owner := func(name string, svc int) int {
		if name == ServiceUser {
			return svc
		}
		return 0
	}
	if err := os.Lchown(p, owner(d.Owner, id.UID), owner(d.Group, id.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if err := os.Chmod(p, d.Mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}
