package backup

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"testing"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit/audittest"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// benchArchive writes a fake installation with a signed audit log of about
// QWA_BENCH_MIB MiB (default 32) and a backup of it, as
// scripts/bench/backup.sh does with auditgen.
func benchArchive(b *testing.B) (file string, id *age.X25519Identity, signer manifests.PrivateKey) {
	b.Helper()
	root, id, signer := benchInstall(b)
	file = filepath.Join(filepath.Dir(root), "bench.age")
	if _, err := Create(ctx, Options{Root: root, Out: file, Recipients: []age.Recipient{id.Recipient()}, Key: signer}); err != nil {
		b.Fatal(err)
	}
	return file, id, signer
}

// benchInstall writes the fake installation benchArchive backs up, under
// root, and returns an age identity and a signing key for its backups.
func benchInstall(b *testing.B) (root string, id *age.X25519Identity, signer manifests.PrivateKey) {
	b.Helper()
	mib := int64(32)
	if s := os.Getenv("QWA_BENCH_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		mib = n
	}
	base := b.TempDir()
	root = filepath.Join(base, "root")
	cfg := filepath.Join(root, provision.ConfigDir)
	logDir := filepath.Join(root, provision.LogDir)
	for _, d := range []string{cfg, logDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			b.Fatal(err)
		}
	}
	ak, err := manifests.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	if signer, err = manifests.GenerateKey(nil); err != nil {
		b.Fatal(err)
	}
	if err := manifests.WriteKeyPair(filepath.Join(cfg, "audit"), ak, "audit"); err != nil {
		b.Fatal(err)
	}
	// What a drill checks besides the log.
	if err := certs.Init(certs.Options{Dir: filepath.Join(cfg, "tls"), Hosts: []string{"qwen.local"}}); err != nil {
		b.Fatal(err)
	}
	ts, err := tokens.Load(filepath.Join(cfg, "tokens.json"))
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := ts.Create(tokens.CreateOptions{Name: "admin", Role: tokens.RoleAdmin}); err != nil {
		b.Fatal(err)
	}
	if err := ts.Save(filepath.Join(cfg, "tokens.json")); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(logDir, "audit.log")
	if err := audittest.Fill(logPath, &ak, mib<<20); err != nil {
		b.Fatal(err)
	}
	if err := state.Save(root, &state.State{Root: root, Bundle: state.Bundle{Name: "bench", Version: 1},
		Store: state.Store{Backend: "none"}, Gateway: state.Gateway{AuditLog: logPath}}); err != nil {
		b.Fatal(err)
	}
	if id, err = age.GenerateX25519Identity(); err != nil {
		b.Fatal(err)
	}
	return root, id, signer
}

// BenchmarkCreate times, on the installation benchArchive backs up,
// Debian's tar -c | age -r of the same directories (when installed) and
// Create. Both write a new file each time; Create also syncs it.
func BenchmarkCreate(b *testing.B) {
	root, id, signer := benchInstall(b)
	out := filepath.Join(filepath.Dir(root), "out.age")
	var size int64
	for _, d := range []string{"etc", "var"} {
		must(b, filepath.Walk(filepath.Join(root, d), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				size += fi.Size()
			}
			return err
		}))
	}
	b.Run("tar-age", func(b *testing.B) {
		if _, err := exec.LookPath("age"); err != nil {
			b.Skip("needs Debian's age")
		}
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			if out, err := exec.Command("sh", "-c", `tar -C "$0" -cf - etc var | age -r "$1" > "$2"`, root, id.Recipient().String(), out).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			b.StopTimer()
			os.Remove(out)
			b.StartTimer()
		}
	})
	b.Run("create", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			if _, err := Create(ctx, Options{Root: root, Out: out, Recipients: []age.Recipient{id.Recipient()}, Key: signer}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.Remove(out)
			b.StartTimer()
		}
	})
}

// BenchmarkVerify times, on one archive (QWA_BENCH_MIB sizes its audit
// log): Debian's age -d | tar -x (when installed), Extract (decrypt,
// write and hash every member, check the signature: what tar does, and
// the hashes), Verify (that and the audit chain, checked while
// extracting), and Verify with Drill (that, a restore into a scratch root
// and its checks). scripts/bench/backup.sh runs it.
func BenchmarkVerify(b *testing.B) {
	// As the CLI's backup verify runs it.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	file, id, signer := benchArchive(b)
	st, err := os.Stat(file)
	if err != nil {
		b.Fatal(err)
	}
	ids, trusted := []age.Identity{id}, []manifests.PublicKey{signer.Public()}
	scratch := b.TempDir()
	b.Run("age-tar", func(b *testing.B) {
		if _, err := exec.LookPath("age"); err != nil {
			b.Skip("needs Debian's age")
		}
		idFile := filepath.Join(scratch, "id.txt")
		if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(st.Size())
		for i := 0; i < b.N; i++ {
			dir, err := os.MkdirTemp(scratch, "x")
			if err != nil {
				b.Fatal(err)
			}
			if out, err := exec.Command("sh", "-c", `age -d -i "$0" "$1" | tar -x -C "$2"`, idFile, file, dir).CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
	})
	b.Run("extract", func(b *testing.B) {
		b.SetBytes(st.Size())
		for i := 0; i < b.N; i++ {
			dir, err := os.MkdirTemp(scratch, "x")
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(file)
			if err != nil {
				b.Fatal(err)
			}
			_, err = Extract(ctx, f, ids, trusted, dir)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dir)
			b.StartTimer()
		}
	})
	b.Run("restore", func(b *testing.B) {
		// Everything restore does with the archive: verify it in its
		// staging directory, put the configuration and the audit log in
		// place durably, append the restore record. Installing the bundle
		// afterwards takes what install takes, whatever the archive holds
		// (docs/install.md), and is left out.
		release, err := manifests.GenerateKey(nil)
		must(b, err)
		bundle := filepath.Join(scratch, "bundle")
		signedBundle(b, bundle, 1, release)
		installed := func(context.Context, provision.Options) (*provision.Result, error) { return &provision.Result{}, nil }
		b.SetBytes(st.Size())
		for i := 0; i < b.N; i++ {
			root, err := os.MkdirTemp(scratch, "root")
			must(b, err)
			if _, err := Restore(ctx, RestoreOptions{File: file, Identities: ids, Trusted: trusted, Bundle: bundle, Root: root,
				BundleTrust: []string{"unused: install is left out"}, install: installed}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(root)
			b.StartTimer()
		}
	})
	for _, drill := range []bool{false, true} {
		name := "verify"
		if drill {
			name = "drill"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(st.Size())
			for i := 0; i < b.N; i++ {
				rep, err := Verify(ctx, VerifyOptions{File: file, Identities: ids, Trusted: trusted, Drill: drill, Scratch: scratch})
				if err != nil {
					b.Fatal(err)
				}
				if drill && len(rep.Drill) < 5 {
					b.Fatalf("drill ran %d checks", len(rep.Drill))
				}
			}
		})
	}
}
