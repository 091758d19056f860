package main

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

func init() {
	dirFlag := &cli.StringFlag{Name: "dir", Required: true, Usage: "the store `DIR` (its metadata sits beside it as DIR" + storage.MetadataSuffix + ")"}
	keyFileFlag := &cli.StringFlag{Name: "key-file", Usage: "key `FILE` protector (init creates it when missing)"}
	passFlag := &cli.BoolFlag{Name: "passphrase", Usage: "use a passphrase, asked on the terminal or read as one line of stdin"}
	recoveryFlag := &cli.BoolFlag{Name: "recovery-key", Usage: "use the recovery key printed at init, asked on the terminal or read from stdin"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}
	kdfFlags := []cli.Flag{
		&cli.UintFlag{Name: "kdf-time", Value: uint(storage.DefaultKDF.Time), Usage: "argon2id passes for passphrases and LUKS key slots"},
		&cli.UintFlag{Name: "kdf-memory", Value: uint(storage.DefaultKDF.MemoryKiB), Usage: "argon2id memory in `KiB`"},
		&cli.UintFlag{Name: "kdf-threads", Value: uint(storage.DefaultKDF.Threads), Usage: "argon2id threads"},
	}
	register(&cli.Command{
		Name:  "storage",
		Usage: "keep the model in an encrypted store with strict permissions",
		Description: "An fscrypt v2 directory (AES-256-XTS contents, AES-256-CTS names; the default on ext4 and\n" +
			"f2fs) or a LUKS2 volume (aes-xts-plain64, 512-bit key, argon2id). A random master key is\n" +
			"wrapped by protectors: key files, passphrases and a recovery key printed once at init.\n" +
			"Directories are 0700 and files 0400, owned by --owner; a looser store is refused.\n" +
			"An fscrypt store is also written into Debian's fscrypt tool metadata (MOUNT/.fscrypt), with\n" +
			"the recovery key as a raw-key protector: `fscrypt unlock` opens it without this program.",
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "create an encrypted store and print its recovery key once",
			UsageText: "qwen-appliance storage init --dir DIR [--backend fscrypt|luks] [--key-file F] [--passphrase] [--owner USER]\n   [--volume DEV|FILE --size BYTES] [--kdf-time N --kdf-memory KiB --kdf-threads N] [--json]",
			Description: "Creates DIR (empty or missing), sets the encryption up, and leaves the store unlocked.\n" +
				"The recovery key goes to stdout exactly once: write it down and keep it offline.\n" +
				"--backend luks formats --volume (a block device, or a file created with --size) and then\n" +
				"opens, formats ext4 and mounts it at DIR; opening needs device-mapper in the kernel.",
			Flags: append([]cli.Flag{dirFlag, keyFileFlag, passFlag, jsonFlag,
				&cli.StringFlag{Name: "backend", Value: string(storage.BackendFscrypt), Usage: "fscrypt or luks"},
				&cli.StringFlag{Name: "owner", Value: "root", Usage: "the service `USER` that owns the files"},
				&cli.StringFlag{Name: "volume", Usage: "LUKS: the block device or `FILE`"},
				&cli.StringFlag{Name: "size", Usage: "LUKS: create --volume as a file of `SIZE` (e.g. 20G)"},
			}, kdfFlags...),
			Action: storageInit,
		}, {
			Name:      "unlock",
			Usage:     "load the key so the store can be read",
			UsageText: "qwen-appliance storage unlock --dir DIR (--key-file F | --passphrase | --recovery-key)",
			Description: "Refuses a store whose owner or modes are looser than 0700/0400, naming each path,\n" +
				"before any key is loaded. A wrong key leaves the store locked.",
			Flags:  []cli.Flag{dirFlag, keyFileFlag, passFlag, recoveryFlag, jsonFlag},
			Action: storageUnlock,
		}, {
			Name:      "lock",
			Usage:     "remove the key: names become ciphertext and contents unreadable",
			UsageText: "qwen-appliance storage lock --dir DIR",
			Description: "Syncs, then removes the key from the kernel (fscrypt) or unmounts and closes the volume\n" +
				"(LUKS). Files still open by a process stay readable until closed: stop the runtime first.",
			Flags:  []cli.Flag{dirFlag, jsonFlag},
			Action: storageLock,
		}, {
			Name:        "status",
			Usage:       "show backend, cipher, policy, lock state, owner and modes",
			UsageText:   "qwen-appliance storage status --dir DIR [--json]",
			Description: "Exit status 1 when the store's permissions are looser than it allows.",
			Flags:       []cli.Flag{dirFlag, jsonFlag},
			Action:      storageStatus,
		}, {
			Name:      "rotate-key",
			Usage:     "replace one protector (key file or passphrase); the data stays",
			UsageText: "qwen-appliance storage rotate-key --dir DIR (--key-file F | --passphrase | --recovery-key) (--new-key-file F | --new-passphrase)",
			Description: "The old key opens the master key, which is wrapped for the new key; the old protector is\n" +
				"removed. With passphrases from stdin, the old one is the first line and the new one the second.\n" +
				"Retiring the recovery key (--recovery-key as the old key) also removes its fscrypt tool protector.",
			Flags: append([]cli.Flag{dirFlag, keyFileFlag, passFlag, recoveryFlag, jsonFlag,
				&cli.StringFlag{Name: "new-key-file", Usage: "the new key `FILE` (created when missing)"},
				&cli.BoolFlag{Name: "new-passphrase", Usage: "protect with a new passphrase"},
			}, kdfFlags...),
			Action: storageRotate,
		}, {
			Name:      "erase",
			Usage:     "crypto-erase: destroy every key and the ciphertext",
			UsageText: "qwen-appliance storage erase --dir DIR [--yes]",
			Description: "Locks the store, destroys the wrapped keys (fscrypt: in its metadata and in the fscrypt\n" +
				"tool's) or wipes every key slot (LUKS), then removes the metadata and the ciphertext.\n" +
				"No key, passphrase or recovery key can bring the data back. Asks on a terminal; --yes\n" +
				"skips the question, and without a terminal it is required.",
			Flags:  []cli.Flag{dirFlag, jsonFlag, &cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"}},
			Action: storageErase,
		}, {
			Name:      "copy-in",
			Usage:     "copy a verified bundle's files into the store, hashing while writing",
			UsageText: "qwen-appliance storage copy-in --bundle DIR --dir STORE --trust KEY.pub [--owner USER]",
			Description: "Checks the bundle's manifest signature first, then streams every listed file into the\n" +
				"store in one pass, comparing chunk and file hashes; a file is renamed into place only\n" +
				"when it matched, and the manifest is written last. Exit status 3 when any file differs.",
			Flags: []cli.Flag{dirFlag, jsonFlag,
				&cli.StringFlag{Name: "bundle", Required: true, Usage: "the unpacked bundle `DIR`"},
				&cli.StringSliceFlag{Name: "trust", Required: true, Usage: "trusted public key `FILE` (repeatable)"},
				&cli.StringFlag{Name: "owner", Value: "root", Usage: "the service `USER` that owns the files"},
			},
			Action: storageCopyIn,
		}, {
			Name:      "unit",
			Usage:     "print the boot-time unlock unit",
			UsageText: "qwen-appliance storage unit --dir DIR --key-file F [--runtime-unit NAME] [--gateway-unit NAME] [--binary PATH]",
			Description: "A oneshot unit that unlocks the store with the key file at boot. install writes it as\n" +
				harden.StoreUnit + " (with an encrypted store under systemd), and its runtime and gateway\n" +
				"units require it; --runtime-unit and --gateway-unit also order it before, and make it\n" +
				"required by, units of your own. When the key file is absent or wrong the unlock fails with\n" +
				"the reason in the journal, and systemd does not start the runtime (\"dependency failed\");\n" +
				"unlock by hand with --passphrase or --recovery-key.",
			Flags: []cli.Flag{dirFlag, keyFileFlag,
				&cli.StringFlag{Name: "runtime-unit", Usage: "an inference server `UNIT` of your own that needs the store (install's units require it themselves)"},
				&cli.StringFlag{Name: "gateway-unit", Usage: "a gateway `UNIT` of your own that serves the knowledge base in the store"},
				&cli.StringFlag{Name: "binary", Value: provision.ProgramPath, Usage: "absolute `PATH` of qwen-appliance on the host"},
			},
			Action: storageUnit,
		}},
	})
}

// secrets reads passphrases and recovery keys: from the terminal without
// echo, or line by line from stdin.
type secrets struct {
	in     *os.File
	prompt io.Writer
	lines  *bufio.Reader
}

func newSecrets(c *cli.Context) *secrets {
	return &secrets{in: os.Stdin, prompt: c.App.ErrWriter}
}

func (s *secrets) read(prompt string, confirm bool) ([]byte, error) {
	fd := int(s.in.Fd())
	if term.IsTerminal(fd) {
		fmt.Fprint(s.prompt, prompt+": ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(s.prompt)
		if err != nil {
			return nil, err
		}
		if confirm {
			fmt.Fprint(s.prompt, "again: ")
			b, err := term.ReadPassword(fd)
			fmt.Fprintln(s.prompt)
			if err != nil {
				return nil, err
			}
			if string(a) != string(b) {
				return nil, errors.New("the two entries differ")
			}
		}
		if len(a) == 0 {
			return nil, errors.New("empty entry")
		}
		return a, nil
	}
	if s.lines == nil {
		s.lines = bufio.NewReader(s.in)
	}
	line, err := s.lines.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("%s: stdin gave an empty line", prompt)
		}
		return nil, err
	}
	return []byte(line), nil
}

// credential builds the one credential the key flags name.
func credential(c *cli.Context, s *secrets, prefix string, confirm bool) (storage.Credential, error) {
	keyFile, pass, recovery := c.String(prefix+"key-file"), c.Bool(prefix+"passphrase"), prefix == "" && c.Bool("recovery-key")
	n := 0
	for _, set := range []bool{keyFile != "", pass, recovery} {
		if set {
			n++
		}
	}
	if n != 1 {
		return storage.Credential{}, usagef("pass exactly one of --"+prefix+"key-file, --"+prefix+"passphrase"+map[bool]string{true: "", false: " or --recovery-key"}[prefix != ""],
			"%d keys given for %s", n, map[string]string{"": "the store", "new-": "the new protector"}[prefix])
	}
	switch {
	case keyFile != "":
		return storage.Credential{KeyFile: keyFile}, nil
	case pass:
		p, err := s.read(map[string]string{"": "passphrase", "new-": "new passphrase"}[prefix], confirm)
		if err != nil {
			return storage.Credential{}, fmt.Errorf("read passphrase: %w", err)
		}
		return storage.Credential{Passphrase: p}, nil
	}
	r, err := s.read("recovery key", false)
	if err != nil {
		return storage.Credential{}, fmt.Errorf("read recovery key: %w", err)
	}
	return storage.Credential{RecoveryKey: string(r)}, nil
}

// ensureKeyFile creates a missing key file for a new protector.
func ensureKeyFile(c *cli.Context, path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := storage.NewKeyFile(path); err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: created key file %s (32 random bytes, mode 0400); keep a copy offline\n", path)
	return nil
}

func lookupOwner(name string) (storage.Owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return storage.Owner{}, usagef("pass --owner with an existing user (e.g. the service user)", "owner %q: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return storage.Owner{UID: uid, GID: gid, Name: name}, nil
}

func kdfOptions(c *cli.Context) (storage.Options, error) {
	k := storage.KDF{Time: uint32(c.Uint("kdf-time")), MemoryKiB: uint32(c.Uint("kdf-memory")), Threads: uint8(min(c.Uint("kdf-threads"), 255))}
	if err := k.Validate(); err != nil {
		return storage.Options{}, usagef("adjust --kdf-time, --kdf-memory or --kdf-threads", "%v", err)
	}
	return storage.Options{KDF: k}, nil
}

// storageError adds the exit code and hint an operator needs.
func storageError(err error) error {
	var ne *storage.NotEncryptableError
	var pe *storage.PermissionError
	var be *storage.BusyError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ne):
		return withCode(exitHostUnfit, err, "put the store on ext4/f2fs with encryption enabled, or pass --backend luks --volume DEV|FILE")
	case errors.Is(err, storage.ErrNoDeviceMapper):
		return withCode(exitHostUnfit, err, "the LUKS backend needs a kernel with device-mapper (dm_mod); use --backend fscrypt on ext4")
	case errors.Is(err, storage.ErrWrongKey):
		return withCode(exitError, err, "check --key-file or the passphrase; --recovery-key opens the store with the key printed at init")
	case errors.As(err, &pe):
		return withCode(exitError, err, "fix the named paths (directories 0700, files 0400, owned by the store's owner; metadata 0600 root), then retry")
	case errors.As(err, &be):
		return withCode(exitError, err, "stop the runtime that holds the files open, then run 'storage lock' again")
	case errors.Is(err, storage.ErrNoStore):
		return withCode(exitError, err, "check --dir, or create the store with 'qwen-appliance storage init'")
	case errors.Is(err, storage.ErrExists):
		return withCode(exitError, err, "choose an empty --dir, or 'storage erase' the old store first")
	case errors.Is(err, storage.ErrLocked):
		return withCode(exitError, err, "run 'qwen-appliance storage unlock --dir …' first")
	case errors.Is(err, manifests.ErrVerification):
		return withCode(exitVerification, err, "the bundle's bytes differ from its signed manifest: fetch the bundle again")
	}
	return err
}

func storageInit(c *cli.Context) error {
	backend, err := storage.ParseBackend(c.String("backend"))
	if err != nil {
		return usagef("pass --backend fscrypt or --backend luks", "%v", err)
	}
	opts, err := kdfOptions(c)
	if err != nil {
		return err
	}
	owner, err := lookupOwner(c.String("owner"))
	if err != nil {
		return err
	}
	var size int64
	if v := c.String("size"); v != "" {
		if size, err = space.Parse(v); err != nil {
			return usagef("pass --size like 20G or 512M", "%v", err)
		}
	}
	if backend == storage.BackendLUKS && c.String("volume") == "" {
		return usagef("pass --volume DEV, or --volume FILE --size 20G", "the luks backend needs a volume")
	}
	var creds []storage.Credential
	if f := c.String("key-file"); f != "" {
		if err := ensureKeyFile(c, f); err != nil {
			return err
		}
		creds = append(creds, storage.Credential{KeyFile: f})
	}
	if c.Bool("passphrase") {
		p, err := newSecrets(c).read("new passphrase", true)
		if err != nil {
			return fmt.Errorf("read passphrase: %w", err)
		}
		creds = append(creds, storage.Credential{Passphrase: p})
	}
	if len(creds) == 0 {
		return usagef("pass --key-file FILE and/or --passphrase", "no protector given for the new store")
	}
	s, recovery, err := storage.Init(c.Context, storage.InitOptions{Options: opts, Dir: c.String("dir"), Backend: backend,
		Owner: owner, Credentials: creds, Volume: c.String("volume"), VolumeSize: size})
	if recovery != "" {
		// Printed even when opening a formatted LUKS volume failed: the key
		// slot exists and this is the only time the key is shown.
		if c.Bool("json") && err == nil {
			return printJSON(c.App.Writer, map[string]any{"dir": s.Dir, "backend": s.Meta.Backend, "metadata": storage.MetadataPath(s.Dir), "recoveryKey": recovery})
		}
		fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: the recovery key below opens the store if every other key is lost; it is shown only now.\n")
		if backend == storage.BackendFscrypt && err == nil {
			fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: without this program, Debian's fscrypt tool opens the store with it too: `fscrypt unlock %s` with the key's 32 bytes on stdin (see docs/storage.md)\n", s.Dir)
		}
		fmt.Fprintf(c.App.Writer, "recovery key: %s\n", recovery)
	}
	if err != nil {
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s store at %s is ready and unlocked\n", s.Meta.Backend, s.Dir)
	return nil
}

func storageUnlock(c *cli.Context) error {
	cred, err := credential(c, newSecrets(c), "", false)
	if err != nil {
		return err
	}
	s, err := storage.Open(c.String("dir"), storage.Options{})
	if err != nil {
		return storageError(err)
	}
	if err := s.Unlock(c.Context, cred); err != nil {
		if red := withoutCiphertextNames(c, s, err); red != nil {
			return red
		}
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s unlocked\n", s.Dir)
	return jsonOnly(c, map[string]any{"dir": s.Dir, "locked": false})
}

// withoutCiphertextNames rewrites a permission error from a locked fscrypt
// store. While it is locked the names inside are ciphertext: they tell the
// operator nothing and do not belong in tickets and logs. Each such path is
// shown as DIR/[encrypted name]/…, keeping its depth, and the hint fixes
// every entry by type instead of by name. It returns nil for any other error.
func withoutCiphertextNames(c *cli.Context, s *storage.ModelStore, err error) error {
	var pe *storage.PermissionError
	if !errors.As(err, &pe) || s.Meta.Backend != storage.BackendFscrypt {
		return nil
	}
	if st, serr := s.Status(c.Context); serr != nil || !st.Locked {
		return nil
	}
	const hidden = "[encrypted name]"
	red := &storage.PermissionError{}
	for _, p := range pe.Problems {
		if rel, rerr := filepath.Rel(s.Dir, p.Path); rerr == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			depth := strings.Count(rel, string(filepath.Separator))
			p.Path = filepath.Join(s.Dir, strings.Repeat(hidden+"/", depth)+hidden)
		}
		red.Problems = append(red.Problems, p)
	}
	owner := s.Meta.Owner.Name
	if owner == "" {
		owner = strconv.Itoa(s.Meta.Owner.UID)
	}
	return withCode(exitError, fmt.Errorf("unlock %s (locked: the names inside are encrypted): %w", s.Dir, red),
		fmt.Sprintf("fix every entry by type: find %[1]s -type d -exec chmod 0700 {} + ; find %[1]s -type f -exec chmod 0400 {} + ; chown -R %[2]s: %[1]s; then unlock again", s.Dir, owner))
}

func storageLock(c *cli.Context) error {
	s, err := storage.Open(c.String("dir"), storage.Options{})
	if err != nil {
		return storageError(err)
	}
	if err := s.Lock(c.Context); err != nil {
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s locked\n", s.Dir)
	return jsonOnly(c, map[string]any{"dir": s.Dir, "locked": true})
}

func storageStatus(c *cli.Context) error {
	s, err := storage.Open(c.String("dir"), storage.Options{})
	if err != nil {
		return storageError(err)
	}
	st, err := s.Status(c.Context)
	if err != nil {
		return storageError(err)
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, st); err != nil {
			return err
		}
	} else {
		w := c.App.Writer
		state, mode := "unlocked", st.Mode
		if st.Locked {
			state = "locked"
		}
		if mode == "" {
			mode = "- (" + st.Dir + " does not exist: not mounted)"
		}
		fmt.Fprintf(w, "store:      %s\nbackend:    %s\nstate:      %s\ncipher:     %s (%d-bit key)\npolicy:     %s\nowner:      %s (uid %d, gid %d)\nmode:       %s\nmetadata:   %s\n",
			st.Dir, st.Backend, state, st.Cipher, st.KeyBits, st.Policy, st.Owner.Name, st.Owner.UID, st.Owner.GID, mode, st.Metadata)
		for _, p := range st.Protectors {
			extra := ""
			if p.KeySlot != nil {
				extra = fmt.Sprintf(" (key slot %d)", *p.KeySlot)
			}
			if p.KDF != nil {
				extra += fmt.Sprintf(" argon2id t=%d m=%dKiB p=%d", p.KDF.Time, p.KDF.MemoryKiB, p.KDF.Threads)
			}
			if p.FscryptProtector != "" {
				extra += " (fscrypt tool protector " + p.FscryptProtector + ")"
			}
			fmt.Fprintf(w, "protector:  %s %s%s, added %s\n", p.ID, p.Kind, extra, p.Created.Format("2006-01-02"))
		}
		if st.FscryptTool != "" {
			fmt.Fprintf(w, "fscrypt:    %s\n", st.FscryptTool)
		}
		for _, p := range st.Permissions {
			fmt.Fprintf(w, "PROBLEM:    %s: %s\n", p.Path, p.Detail)
		}
	}
	if len(st.Permissions) > 0 {
		return storageError(&storage.PermissionError{Problems: st.Permissions})
	}
	return nil
}

func storageRotate(c *cli.Context) error {
	opts, err := kdfOptions(c)
	if err != nil {
		return err
	}
	sec := newSecrets(c)
	old, err := credential(c, sec, "", false)
	if err != nil {
		return err
	}
	if err := ensureKeyFile(c, c.String("new-key-file")); err != nil {
		return err
	}
	nu, err := credential(c, sec, "new-", true)
	if err != nil {
		return err
	}
	s, err := storage.Open(c.String("dir"), storage.Options{})
	if err != nil {
		return storageError(err)
	}
	if err := s.RotateKey(c.Context, old, nu, opts); err != nil {
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s of %s replaced by %s; copies of the old metadata file (backups) still open with the old key\n", old, s.Dir, nu)
	return jsonOnly(c, map[string]any{"dir": s.Dir, "removed": old.String(), "added": nu.String()})
}

func storageErase(c *cli.Context) error {
	s, err := storage.Open(c.String("dir"), storage.Options{})
	if err != nil {
		return storageError(err)
	}
	if !c.Bool("yes") {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return usagef("pass --yes to erase without a terminal", "refusing to erase %s without confirmation", s.Dir)
		}
		fmt.Fprintf(c.App.ErrWriter, "This destroys every key of %s; its data cannot be recovered.\nType the store's directory name (%s) to confirm: ", s.Dir, filepath.Base(s.Dir))
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != filepath.Base(s.Dir) {
			return errors.New("erase cancelled: the confirmation did not match")
		}
	}
	trimmed, err := s.Erase(c.Context)
	if err != nil {
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %s crypto-erased (keys and metadata destroyed", s.Dir)
	if s.Meta.Backend == storage.BackendFscrypt {
		fmt.Fprintf(c.App.ErrWriter, "; free blocks discarded: %v", trimmed)
	}
	fmt.Fprintln(c.App.ErrWriter, ")")
	return jsonOnly(c, map[string]any{"dir": s.Dir, "erased": true, "backend": s.Meta.Backend, "trimmed": trimmed})
}

func storageCopyIn(c *cli.Context) error {
	keys, err := manifests.LoadPublicKeys(c.StringSlice("trust")...)
	if err != nil {
		return usagef("pass --trust with the bundle signer's public key file", "%v", err)
	}
	owner, err := lookupOwner(c.String("owner"))
	if err != nil {
		return err
	}
	bundle := c.String("bundle")
	signed, err := manifests.Verifier{Trusted: keys}.Open(bundle)
	if err != nil {
		return openError(err)
	}
	sig, err := manifests.ReadFile(bundle, manifests.SignatureFile)
	if err != nil {
		return err
	}
	rep := reporter(c, "copy-in")
	err = storage.CopyIn(c.Context, bundle, c.String("dir"), signed.Manifest, storage.CopyOptions{Owner: owner, Progress: byteProgress(rep, bundle, signed.Manifest.TotalSize()), Signature: sig})
	rep.Done(bundle, err)
	rep.Stop()
	if err != nil {
		return storageError(err)
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: %d files (%d bytes) of %s version %d copied into %s and confirmed against the signed manifest\n",
		len(signed.Manifest.Files), signed.Manifest.TotalSize(), signed.Manifest.Name, signed.Manifest.Version, c.String("dir"))
	return jsonOnly(c, map[string]any{"dir": c.String("dir"), "bundle": signed.Manifest.Name, "version": signed.Manifest.Version,
		"files": len(signed.Manifest.Files), "bytes": signed.Manifest.TotalSize(), "verified": true})
}

func storageUnit(c *cli.Context) error {
	if c.String("key-file") == "" {
		return usagef("pass --key-file with the key file the host unlocks with at boot", "the boot unit needs a key file")
	}
	dir, _ := filepath.Abs(c.String("dir"))
	key, _ := filepath.Abs(c.String("key-file"))
	u, err := storage.UnlockUnit(storage.UnitOptions{Binary: c.String("binary"), Dir: dir, KeyFile: key, RuntimeUnit: c.String("runtime-unit"), GatewayUnit: c.String("gateway-unit")})
	if err != nil {
		return usagef("check --dir, --key-file, --binary, --runtime-unit and --gateway-unit", "%v", err)
	}
	_, err = io.WriteString(c.App.Writer, u)
	return err
}
