package manifests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	t0      = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	testKey = mustKey(1)
	other   = mustKey(2)
	third   = mustKey(3)
)

func mustKey(seed uint64) PrivateKey {
	k, err := GenerateKey(rand.NewChaCha8([32]byte{byte(seed)}))
	if err != nil {
		panic(err)
	}
	return k
}

const testChunk = 64 << 10

// makeTree writes a small bundle: one multi-chunk file, one exactly one chunk,
// an empty file and a nested one.
func makeTree(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	write := func(rel string, n int, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("model/weights.bin", 5*testChunk+123, 0o644)
	write("model/config.json", testChunk, 0o644)
	write("empty", 0, 0o644)
	write("bin/server", 1000, 0o755)
	return dir
}

func createOpts() CreateOptions {
	return CreateOptions{Name: "demo", Version: 3, Created: t0, Expires: t0.Add(365 * 24 * time.Hour), ChunkSize: testChunk,
		Meta: Meta{Model: Model{Name: "Qwen/Qwen2.5-7B-Instruct", Layers: 28, KVHeads: 4, HeadDim: 128, Dtype: "bf16"}}}
}

// signedTree returns a tree with a manifest signed by testKey.
func signedTree(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := makeTree(t)
	m, err := Create(context.Background(), dir, createOpts())
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, m, testKey); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func verifier(keys ...PrivateKey) Verifier {
	v := Verifier{Now: func() time.Time { return t0.Add(time.Hour) }}
	for _, k := range keys {
		v.Trusted = append(v.Trusted, k.Public())
	}
	return v
}

func TestCreateIsDeterministic(t *testing.T) {
	dir := makeTree(t)
	var first []byte
	for _, workers := range []int{1, 2, 7} {
		opts := createOpts()
		opts.Workers = workers
		m, err := Create(context.Background(), dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(first, b) {
			t.Fatalf("workers=%d gave different bytes", workers)
		}
	}
}

func TestHashesMatchStandardLibrary(t *testing.T) {
	dir := makeTree(t)
	m, err := Create(context.Background(), dir, createOpts())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		data, err := os.ReadFile(filepath.Join(dir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("%s: whole-file hash differs from crypto/sha256", f.Path)
		}
		if len(f.Chunks) != chunkCount(int64(len(data)), testChunk) {
			t.Fatalf("%s: %d chunks", f.Path, len(f.Chunks))
		}
		for i, c := range f.Chunks {
			off, n := f.ChunkRange(i)
			// The proof is crypto/sha256's chaining value after the
			// first i+1 chunks, and the file's digest for the last.
			h := sha256.New()
			h.Write(data[:off+n])
			state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			want := hex.EncodeToString(state[4:36])
			if i == len(f.Chunks)-1 {
				want = f.SHA256
			}
			if c != want {
				t.Errorf("%s chunk %d: proof %s, crypto/sha256 says %s", f.Path, i, c, want)
			}
			// Each chunk checks on its own, and not with a byte changed.
			chk, err := f.CheckChunk(i)
			if err != nil {
				t.Fatal(err)
			}
			chk.Write(data[off : off+n])
			if !chk.OK() {
				t.Errorf("%s chunk %d does not check", f.Path, i)
			}
			bad := bytes.Clone(data[off : off+n])
			bad[n/2] ^= 1
			chk, _ = f.CheckChunk(i)
			chk.Write(bad)
			if chk.OK() {
				t.Errorf("%s chunk %d checks with a flipped byte", f.Path, i)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir, m := signedTree(t)
	s, err := verifier(testKey).Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Manifest.Version != 3 || len(s.Manifest.Files) != len(m.Files) || s.KeyIDs[0] != testKey.ID {
		t.Fatalf("unexpected manifest %+v", s)
	}
	var seen int64
	err = CheckFiles(context.Background(), dir, s.Manifest, CheckOptions{Progress: func(n int64) { seen += n }, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if seen != m.TotalSize() {
		t.Fatalf("progress reported %d bytes, want %d", seen, m.TotalSize())
	}
}

func problems(t *testing.T, dir string, m *Manifest) []FileProblem {
	t.Helper()
	err := CheckFiles(context.Background(), dir, m, CheckOptions{})
	if err == nil {
		t.Fatal("CheckFiles passed, want problems")
	}
	if !errors.Is(err, ErrVerification) {
		t.Fatalf("error %v does not match ErrVerification", err)
	}
	var fe *FilesError
	if !errors.As(err, &fe) {
		t.Fatalf("error %T is not a *FilesError", err)
	}
	return fe.Problems
}

func TestFlippedByteIsNamedWithItsChunk(t *testing.T) {
	for _, off := range []int64{0, testChunk - 1, testChunk, 3*testChunk + 77, 5*testChunk + 122} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			dir, m := signedTree(t)
			p := filepath.Join(dir, "model/weights.bin")
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			f.ReadAt(b, off)
			b[0] ^= 0x01
			f.WriteAt(b, off)
			f.Close()
			ps := problems(t, dir, m)
			if len(ps) != 1 {
				t.Fatalf("got %v", ps)
			}
			p0 := ps[0]
			chunk := int(off / testChunk)
			if p0.Path != "model/weights.bin" || p0.Kind != ProblemChunk || p0.Chunk != chunk || p0.Offset != int64(chunk)*testChunk {
				t.Fatalf("got %+v", p0)
			}
			if !strings.Contains(p0.Detail, fmt.Sprintf("bytes %d-", p0.Offset)) {
				t.Fatalf("detail %q does not name the byte range", p0.Detail)
			}
		})
	}
}

func TestFileProblemsAreEachNamed(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		path   string
		kind   string
	}{
		{"missing", func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "bin/server"))) }, "bin/server", ProblemMissing},
		{"extra", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "model/extra"), []byte("x"), 0o644))
		}, "model/extra", ProblemExtra},
		{"mode", func(t *testing.T, dir string) { must(t, os.Chmod(filepath.Join(dir, "bin/server"), 0o777)) }, "bin/server", ProblemMode},
		{"setuid", func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "bin/server"), 0o755|os.ModeSetuid))
		}, "bin/server", ProblemMode},
		{"size", func(t *testing.T, dir string) {
			must(t, os.Truncate(filepath.Join(dir, "model/config.json"), testChunk-1))
		}, "model/config.json", ProblemSize},
		{"symlinked file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model/config.json")
			must(t, os.Rename(p, filepath.Join(dir, "real.json")))
			must(t, os.Symlink("../real.json", p))
		}, "model/config.json", ProblemType},
		{"symlinked dir", func(t *testing.T, dir string) {
			must(t, os.Rename(filepath.Join(dir, "bin"), filepath.Join(dir, "elsewhere")))
			must(t, os.Symlink("elsewhere", filepath.Join(dir, "bin")))
		}, "bin/server", ProblemType},
		{"fifo", func(t *testing.T, dir string) { must(t, syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644)) }, "pipe", ProblemType},
		{"fifo in place of file", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "empty")))
			must(t, syscall.Mkfifo(filepath.Join(dir, "empty"), 0o644))
		}, "empty", ProblemType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, m := signedTree(t)
			tc.damage(t, dir)
			found := false
			for _, p := range problems(t, dir, m) {
				if p.Path == tc.path && p.Kind == tc.kind {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %s problem for %s in %v", tc.kind, tc.path, problems(t, dir, m))
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSignatureRefusals(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		v      Verifier
		want   error
	}{
		{"whitespace added", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ManifestFile)
			b, _ := os.ReadFile(p)
			must(t, os.WriteFile(p, append(b, ' '), 0o644))
		}, verifier(testKey), ErrBadSignature},
		{"field changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ManifestFile)
			b, _ := os.ReadFile(p)
			must(t, os.WriteFile(p, bytes.Replace(b, []byte(`"version": 3`), []byte(`"version": 4`), 1), 0o644))
		}, verifier(testKey), ErrBadSignature},
		{"wrong key", nil, verifier(other), ErrUntrustedKey},
		{"no signature file", func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, SignatureFile))) }, verifier(testKey), ErrUnsigned},
		{"garbage signature file", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, SignatureFile), []byte("{}"), 0o644))
		}, verifier(testKey), ErrUnsigned},
		{"expired", nil, func() Verifier {
			v := verifier(testKey)
			v.Now = func() time.Time { return t0.Add(400 * 24 * time.Hour) }
			return v
		}(), ErrExpired},
		{"rollback", nil, func() Verifier { v := verifier(testKey); v.MinVersion = 4; return v }(), ErrRollback},
		{"threshold", nil, func() Verifier { v := verifier(testKey, other); v.Threshold = 2; return v }(), ErrThreshold},
		{"no trusted keys", nil, Verifier{}, ErrUntrustedKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := signedTree(t)
			if tc.damage != nil {
				tc.damage(t, dir)
			}
			_, err := tc.v.Open(dir)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrVerification) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAllowExpiredAndSameVersion(t *testing.T) {
	dir, _ := signedTree(t)
	v := verifier(testKey)
	v.Now = func() time.Time { return t0.Add(400 * 24 * time.Hour) }
	v.AllowExpired = true
	v.MinVersion = 3
	if _, err := v.Open(dir); err != nil {
		t.Fatal(err)
	}
}

func TestThresholdWithCosign(t *testing.T) {
	dir, _ := signedTree(t)
	v := verifier(testKey, other, third)
	v.Threshold = 2
	if _, err := v.Open(dir); !errors.Is(err, ErrThreshold) {
		t.Fatalf("got %v", err)
	}
	if _, err := Cosign(context.Background(), dir, other, CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	// Signing twice with the same key counts once.
	if _, err := Cosign(context.Background(), dir, other, CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := v.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.KeyIDs) != 2 {
		t.Fatalf("keys %v", s.KeyIDs)
	}
	v.Threshold = 3
	if _, err := v.Open(dir); !errors.Is(err, ErrThreshold) {
		t.Fatalf("got %v", err)
	}
}

func TestCosignRefusesChangedFiles(t *testing.T) {
	dir, _ := signedTree(t)
	must(t, os.WriteFile(filepath.Join(dir, "bin/server"), []byte("evil"), 0o755))
	if _, err := Cosign(context.Background(), dir, other, CheckOptions{}); !errors.Is(err, ErrVerification) {
		t.Fatalf("got %v", err)
	}
}

func TestSignatureIsBoundToPurpose(t *testing.T) {
	data := []byte("hello")
	sigs := &Signatures{Signatures: []Signature{Sign(testKey, "volume-index", data)}}
	if _, err := Check(sigs, PurposeManifest, data, []PublicKey{testKey.Public()}, 1); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("a signature for another purpose was accepted: %v", err)
	}
}

func TestCreateRefusesUnsafeTrees(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"symlink file": func(t *testing.T, dir string) { must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link"))) },
		"symlink dir":  func(t *testing.T, dir string) { must(t, os.Symlink("/etc", filepath.Join(dir, "etc"))) },
		"fifo":         func(t *testing.T, dir string) { must(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)) },
		"setuid": func(t *testing.T, dir string) {
			must(t, os.Chmod(filepath.Join(dir, "bin/server"), 0o755|os.ModeSetuid))
		},
		"backslash name": func(t *testing.T, dir string) { must(t, os.WriteFile(filepath.Join(dir, `a\b`), nil, 0o644)) },
		"newline name":   func(t *testing.T, dir string) { must(t, os.WriteFile(filepath.Join(dir, "a\nb"), nil, 0o644)) },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := makeTree(t)
			damage(t, dir)
			if _, err := Create(context.Background(), dir, createOpts()); err == nil {
				t.Fatal("Create accepted an unsafe tree")
			}
		})
	}
}

func TestValidatePath(t *testing.T) {
	good := []string{"a", "model/weights-00001-of-00004.safetensors", "a/b/c", "ünïcode", ".hidden"}
	bad := []string{"", "/abs", "a/../b", "..", ".", "a//b", "a/", "./a", `a\b`, "a\x00b", "a\nb", strings.Repeat("x", 256), "\xff"}
	for _, p := range good {
		if err := ValidatePath(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range bad {
		if err := ValidatePath(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func TestParseIsStrict(t *testing.T) {
	_, m := signedTree(t)
	good, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"unknown field":   bytes.Replace(good, []byte(`"name": "demo"`), []byte(`"name": "demo", "extra": 1`), 1),
		"trailing data":   append(append([]byte{}, good...), []byte("{}")...),
		"not canonical":   bytes.ReplaceAll(good, []byte("  "), []byte("\t")),
		"duplicate key":   bytes.Replace(good, []byte(`"version": 3,`), []byte(`"version": 9, "version": 3,`), 1),
		"bad hex":         bytes.Replace(good, []byte(m.Files[0].SHA256), []byte(strings.ToUpper(m.Files[0].SHA256)), 1),
		"schema":          bytes.Replace(good, []byte(`"schemaVersion": 2`), []byte(`"schemaVersion": 3`), 1),
		"schema 1":        bytes.Replace(good, []byte(`"schemaVersion": 2`), []byte(`"schemaVersion": 1`), 1),
		"traversal":       bytes.Replace(good, []byte(`"path": "bin/server"`), []byte(`"path": "../server"`), 1),
		"wrong type":      bytes.Replace(good, []byte(`"version": 3`), []byte(`"version": "3"`), 1),
		"negative size":   bytes.Replace(good, []byte(`"size": 1000`), []byte(`"size": -1000`), 1),
		"bad mode":        bytes.Replace(good, []byte(`"mode": "0755"`), []byte(`"mode": "4755"`), 1),
		"truncated":       good[:len(good)/2],
		"chunk count off": bytes.Replace(good, []byte(`"size": 1000`), []byte(`"size": 100000000`), 1),
	}
	for name, data := range cases {
		if _, err := Parse(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err = Parse(cases["wrong type"])
	if err == nil || !strings.Contains(err.Error(), "line ") {
		t.Errorf("type error does not name a line: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "release")
	must(t, WriteKeyPair(name, testKey, "release team"))
	st, err := os.Stat(name + ".key")
	must(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", st.Mode())
	}
	if err := WriteKeyPair(name, other, ""); err == nil {
		t.Fatal("overwrote an existing key pair")
	}
	k, err := LoadPrivateKey(name + ".key")
	must(t, err)
	if k.ID != testKey.ID {
		t.Fatal("private key round trip")
	}
	pubs, err := LoadPublicKeys(name + ".pub")
	must(t, err)
	if len(pubs) != 1 || pubs[0].ID != testKey.ID || pubs[0].Comment != "release team" {
		t.Fatalf("public key round trip: %+v", pubs)
	}
	must(t, os.Chmod(name+".key", 0o644))
	if _, err := LoadPrivateKey(name + ".key"); err == nil {
		t.Fatal("loaded a world-readable private key")
	}
	// A damaged key ID, a private key given as public, garbage.
	pubText, _ := os.ReadFile(name + ".pub")
	damaged := bytes.Replace(pubText, []byte(testKey.ID), []byte(other.ID), 1)
	for _, bad := range [][]byte{damaged, testKey.MarshalText(), []byte("hello"), nil} {
		if _, err := ParsePublicKeys(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestCancelledCreateStops(t *testing.T) {
	dir := makeTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Create(ctx, dir, createOpts()); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func benchFile(b *testing.B, size int64) string {
	dir := b.TempDir()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, "model.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkCreate hashes one 256 MiB file (whole-file and chunk hashes).
func BenchmarkCreate(b *testing.B) {
	dir := benchFile(b, 256<<20)
	b.SetBytes(256 << 20)
	for b.Loop() {
		if _, err := Create(context.Background(), dir, createOpts()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckFiles verifies one 256 MiB file chunk by chunk on all cores.
func BenchmarkCheckFiles(b *testing.B) {
	dir := benchFile(b, 256<<20)
	m, err := Create(context.Background(), dir, createOpts())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(256 << 20)
	for b.Loop() {
		if err := CheckFiles(context.Background(), dir, m, CheckOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestStoreModes(t *testing.T) {
	dir, m := signedTree(t)
	must(t, os.Chmod(filepath.Join(dir, "bin/server"), 0o500))
	must(t, os.Chmod(filepath.Join(dir, "model/config.json"), 0o400))
	opts := CheckOptions{StoreModes: true}
	if err := CheckFiles(context.Background(), dir, m, opts); err != nil {
		t.Fatalf("store modes refused: %v", err)
	}
	// Still refused: a mode that is neither the signed one nor the store's.
	must(t, os.Chmod(filepath.Join(dir, "model/config.json"), 0o440))
	if err := CheckFiles(context.Background(), dir, m, opts); !errors.Is(err, ErrVerification) {
		t.Fatalf("got %v", err)
	}
	if err := CheckFiles(context.Background(), dir, m, CheckOptions{}); err == nil {
		t.Fatal("store modes accepted without StoreModes")
	}
}

func TestUncleanDirectoryNames(t *testing.T) {
	dir, _ := signedTree(t)
	for _, d := range []string{dir + "/", dir + "/./", dir + "//"} {
		m, err := Create(context.Background(), d, createOpts())
		if err != nil {
			t.Fatalf("%q: %v", d, err)
		}
		if err := CheckFiles(context.Background(), d, m, CheckOptions{}); err != nil {
			t.Fatalf("%q: %v", d, err)
		}
	}
}

// A FIFO given as a trusted key (say, on hostile media) is refused at once
// instead of blocking the verifier forever.
func TestLoadPublicKeysRefusesFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "release.pub")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan error, 1)
	go func() { _, err := LoadPublicKeys(p); done <- err }()
	select {
	case err := <-done:
		var fe *FileTypeError
		if !errors.As(err, &fe) {
			t.Fatalf("got %v, want a FileTypeError", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("LoadPublicKeys blocked on a FIFO")
	}
}
