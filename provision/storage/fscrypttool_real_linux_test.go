//go:build linux

package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testFscryptConf is an /etc/fscrypt.conf as `fscrypt setup` writes it, with
// the cheapest passphrase cost (no passphrase is used here).
const testFscryptConf = `{
	"source": "custom_passphrase",
	"hash_costs": {"time": "1", "memory": "128", "parallelism": "1"},
	"options": {"padding": "32", "contents": "AES_256_XTS", "filenames": "AES_256_CTS", "policy_version": "2"},
	"use_fs_keyring_for_v1_policies": false,
	"allow_cross_user_metadata": false
}
`

// inPrivateEtc runs a shell script in a private mount namespace whose /etc is
// an overlay holding testFscryptConf, so the host's /etc is never touched
// and nothing outlives the command.
const inPrivateEtc = `set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
cp "$1/fscrypt.conf" /etc/fscrypt.conf
script=$2
shift 2
eval "$script"`

// debianFscrypt returns a function running a shell command line (with the
// fscrypt tool, and extra positional arguments) in inPrivateEtc.
func debianFscrypt(t *testing.T) func(stdin []byte, script string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("fscrypt"); err != nil {
		t.Skip("needs Debian's fscrypt tool (apt-get install fscrypt)")
	}
	requireTools(t, "unshare", "basenc")
	if data, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(data, []byte("\toverlay\n")) {
		t.Skip("needs overlayfs to give the fscrypt tool a private /etc/fscrypt.conf")
	}
	env := t.TempDir()
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(env, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(env, "fscrypt.conf"), []byte(testFscryptConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(stdin []byte, script string, args ...string) (string, error) {
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", inPrivateEtc, "sh", env, script}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// TestDebianFscryptUnlocksWithRecoveryKey creates a store with this package,
// locks it, and has Debian's fscrypt tool report and unlock it with the
// recovery key, exactly as docs/storage.md's recovery section tells an operator:
// the same bytes come back, and a wrong key is refused.
func TestDebianFscryptUnlocksWithRecoveryKey(t *testing.T) {
	mnt, _ := encryptableFS(t)
	tool := debianFscrypt(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	root := Owner{UID: 0, GID: 0, Name: "root"}
	s, recovery, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Owner: root,
		Credentials: []Credential{{KeyFile: newKeyFile(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Lock(context.Background()) })
	os.MkdirAll(filepath.Join(dir, "model"), dirMode)
	for name, size := range map[string]int{"model/weights.gguf": 3 << 20, "model/config.json": 300, "README": 7, "empty": 0} {
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(dir, name), data, fileMode); err != nil {
			t.Fatal(err)
		}
	}
	want := treeHashes(t, dir)
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err == nil {
		t.Fatal("the store reads in the clear after lock")
	}

	out, err := tool(nil, `fscrypt status "$1"`, dir)
	if err != nil {
		t.Fatalf("fscrypt status: %v\n%s", err, out)
	}
	desc := s.Meta.Protectors[1].FscryptProtector
	for _, w := range []string{`"` + dir + `" is encrypted with fscrypt.`, "Policy:   " + s.Meta.Fscrypt.KeyIdentifier,
		"padding:32 contents:AES_256_XTS filenames:AES_256_CTS policy_version:2", "Unlocked: No",
		"PROTECTOR         LINKED  DESCRIPTION", desc + `  No      raw key protector "qwen-appliance recovery key"`} {
		if !strings.Contains(out, w) {
			t.Errorf("fscrypt status lacks %q:\n%s", w, out)
		}
	}

	// A wrong key, from a file or stdin, leaves the store locked.
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	wk := make([]byte, 32)
	rand.Read(wk)
	os.WriteFile(wrong, wk, 0o600)
	if out, err := tool(nil, `fscrypt unlock --quiet --key="$1" "$2"`, wrong, dir); err == nil || !strings.Contains(out, "incorrect key provided") {
		t.Fatalf("fscrypt unlock with a wrong key file: %v\n%s", err, out)
	}
	if out, err := tool(wk, `fscrypt unlock --quiet "$1"`, dir); err == nil || !strings.Contains(out, "incorrect key provided") {
		t.Fatalf("fscrypt unlock with a wrong key on stdin: %v\n%s", err, out)
	}
	if st, err := s.Status(ctx); err != nil || !st.Locked {
		t.Fatalf("after wrong keys: %+v %v", st, err)
	}

	// docs/storage.md's command: the printed recovery key, decoded, on stdin.
	out, err = tool([]byte(recovery+"\n"), `tr -d ' \n-' | tr a-f A-F | basenc --base16 -d | fscrypt unlock "$1"`, dir)
	if err != nil || !strings.Contains(out, `"`+dir+`" is now unlocked and ready for use.`) {
		t.Fatalf("fscrypt unlock with the recovery key: %v\n%s", err, out)
	}
	if got := treeHashes(t, dir); !equalHashes(got, want) {
		t.Fatalf("after fscrypt unlock the files differ: %d files, want %d", len(got), len(want))
	}
	if st, err := s.Status(ctx); err != nil || st.Locked || st.FscryptTool != filepath.Join(mnt, ".fscrypt/policies", s.Meta.Fscrypt.KeyIdentifier) {
		t.Fatalf("our status after fscrypt unlock: %+v %v", st, err)
	}

	// And the recovery key as a 32-byte key file.
	if out, err := tool(nil, `fscrypt lock "$1"`, dir); err != nil {
		t.Fatalf("fscrypt lock: %v\n%s", err, out)
	}
	keyFile := filepath.Join(t.TempDir(), "recovery.key")
	raw, _ := parseRecoveryKey(recovery)
	os.WriteFile(keyFile, raw, 0o600)
	if out, err := tool(nil, `fscrypt unlock --key="$1" "$2"`, keyFile, dir); err != nil {
		t.Fatalf("fscrypt unlock --key: %v\n%s", err, out)
	}
	if got := treeHashes(t, dir); !equalHashes(got, want) {
		t.Fatal("after fscrypt unlock --key the files differ")
	}

	// Once rotate-key retires the recovery key, the tool no longer opens it.
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.RotateKey(ctx, Credential{RecoveryKey: recovery}, Credential{Passphrase: []byte("pw")}, Options{KDF: testKDF}); err != nil {
		t.Fatal(err)
	}
	if out, err := tool(nil, `fscrypt unlock --quiet --key="$1" "$2"`, keyFile, dir); err == nil || !strings.Contains(out, "does not contain the policy metadata") {
		t.Fatalf("fscrypt unlock after the recovery key was retired: %v\n%s", err, out)
	}
}
