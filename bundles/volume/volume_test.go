package volume

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

var testNow = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeBundle writes a small signed bundle and returns its directory and key.
func makeBundle(t testing.TB, files map[string][]byte) (string, manifests.PrivateKey) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{Name: "test", Version: 4, Created: testNow,
		Expires: testNow.Add(24 * time.Hour), ChunkSize: 64 << 10, Meta: manifests.Meta{Model: manifests.Model{Name: "t"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(dir, m, key); err != nil {
		t.Fatal(err)
	}
	return dir, key
}

func verifier(k manifests.PrivateKey) manifests.Verifier {
	return manifests.Verifier{Trusted: []manifests.PublicKey{k.Public()}, Now: func() time.Time { return testNow }}
}

func standardFiles() map[string][]byte {
	return map[string][]byte{
		"model/weights.bin": randomBytes(3<<20+4321, 1),
		"model/zeros.bin":   make([]byte, 1<<20), // volumes with equal bytes must not confuse the survey
		"config.json":       []byte(`{"a":1}`),
		"empty":             {},
	}
}

func pack(t testing.TB, dir string, key manifests.PrivateKey, parity int) (string, *Index) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vols")
	x, err := Pack(context.Background(), dir, PackOptions{Out: out, VolumeSize: 1 << 20, Parity: parity, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return out, x
}

func sameTree(t *testing.T, a, b string) {
	t.Helper()
	filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs after unpacking", rel)
		}
		return nil
	})
}

func hashTree(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		s := sha256.Sum256(b)
		out[e.Name()] = hex.EncodeToString(s[:])
	}
	return out
}

func TestPackUnpackRoundTrip(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 2)
	if x.DataVolumes < 4 || x.ParityVolumes != 2 {
		t.Fatalf("volumes: %d data, %d parity", x.DataVolumes, x.ParityVolumes)
	}
	before := hashTree(t, vols)
	if _, err := Verify(context.Background(), vols, verifier(key), nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	r, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 0 || len(r.Rebuilt) != 0 {
		t.Fatalf("report: %+v", r)
	}
	sameTree(t, dir, out)
	sameTree(t, out, dir)
	if _, err := (verifier(key)).Open(out); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o755 {
		t.Errorf("output directory mode %v", st.Mode())
	}
	info, err := Inspect(vols, []manifests.PublicKey{key.Public()})
	if err != nil || !info.Verified || info.Manifest == nil || len(info.Present) != len(x.Volumes) {
		t.Fatalf("inspect: %v %+v", err, info)
	}
	if after := hashTree(t, vols); !equalMaps(before, after) {
		t.Fatal("the source volumes changed")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func flip(t *testing.T, p string, off int64) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

func TestCorruptAndLostVolumesAreRebuilt(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 2)
	prefix := Prefix(x.Name, x.Version)
	flip(t, filepath.Join(vols, DataName(prefix, 2)), 777)
	os.Remove(filepath.Join(vols, DataName(prefix, 4)))

	_, err := Verify(context.Background(), vols, verifier(key), nil)
	var ve *VolumesError
	if !errors.As(err, &ve) || !ve.Rebuildable || ve.Missing != 2 || !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("verify: want 2 rebuildable volumes, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{DataName(prefix, 2) + " is corrupt", "volume 4 (" + DataName(prefix, 4) + ", data) is missing"} {
		if !strings.Contains(msg, want) {
			t.Errorf("verify error lacks %q: %s", want, msg)
		}
	}
	before := hashTree(t, vols)
	out := filepath.Join(t.TempDir(), "out")
	r, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Rebuilt) != 2 || r.Rebuilt[0] != 2 || r.Rebuilt[1] != 4 {
		t.Fatalf("rebuilt %v", r.Rebuilt)
	}
	sameTree(t, dir, out)
	if !equalMaps(before, hashTree(t, vols)) {
		t.Fatal("unpack changed or deleted source volumes")
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Fatalf("temporary directories left next to --out: %v", ents)
	}
}

func TestLostParityVolumeIsRebuilt(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 1)
	os.Remove(filepath.Join(vols, DataName(Prefix(x.Name, x.Version), x.DataVolumes))) // the short last one
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, dir, out)
}

func TestTooManyLostVolumes(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 1)
	prefix := Prefix(x.Name, x.Version)
	os.Remove(filepath.Join(vols, DataName(prefix, 1)))
	os.Remove(filepath.Join(vols, ParityName(prefix, 1)))
	out := filepath.Join(t.TempDir(), "out")
	_, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)})
	var ve *VolumesError
	if !errors.As(err, &ve) || ve.Rebuildable || !strings.Contains(err.Error(), "only 1 parity") {
		t.Fatalf("want an unrebuildable error, got %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("output created despite the failure")
	}
}

func TestDuplicatedAndReorderedVolumes(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 0)
	prefix := Prefix(x.Name, x.Version)
	v1, v3 := filepath.Join(vols, DataName(prefix, 1)), filepath.Join(vols, DataName(prefix, 3))
	// Swap the names of volumes 1 and 3, and keep a stray copy of volume 2.
	os.Rename(v1, v1+".tmp")
	os.Rename(v3, v1)
	os.Rename(v1+".tmp", v3)
	b, _ := os.ReadFile(filepath.Join(vols, DataName(prefix, 2)))
	os.WriteFile(filepath.Join(vols, "copy of volume 2.tar"), b, 0o644)

	out := filepath.Join(t.TempDir(), "out")
	r, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)})
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, dir, out)
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
	}
	if kinds[ProblemOutOfOrder] != 2 || kinds[ProblemDuplicate] != 1 {
		t.Fatalf("problems: %+v", r.Problems)
	}
	for _, p := range r.Problems {
		if p.Kind == ProblemOutOfOrder && p.File == DataName(prefix, 1) && !strings.Contains(p.Detail, "holds volume 3") {
			t.Errorf("out-of-order detail: %s", p.Detail)
		}
	}
}

func TestIndexSignatureIsChecked(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	vols, x := pack(t, dir, key, 0)
	other, _ := manifests.GenerateKey(nil)
	_, err := Verify(context.Background(), vols, verifier(other), nil)
	if !errors.Is(err, manifests.ErrUntrustedKey) {
		t.Fatalf("untrusted key: %v", err)
	}
	idx := filepath.Join(vols, IndexName(Prefix(x.Name, x.Version)))
	data, _ := os.ReadFile(idx)
	os.WriteFile(idx, bytes.Replace(data, []byte(`"volumeSize": 1048576`), []byte(`"volumeSize": 1048577`), 1), 0o644)
	_, err = Verify(context.Background(), vols, verifier(key), nil)
	if !errors.Is(err, manifests.ErrBadSignature) {
		t.Fatalf("tampered index: %v", err)
	}
}

func TestPackRefusesChangedBundle(t *testing.T) {
	dir, key := makeBundle(t, standardFiles())
	flip(t, filepath.Join(dir, "model/weights.bin"), 1000)
	out := filepath.Join(t.TempDir(), "vols")
	_, err := Pack(context.Background(), dir, PackOptions{Out: out, VolumeSize: 1 << 20, Key: key})
	if !errors.Is(err, manifests.ErrVerification) || !strings.Contains(err.Error(), "model/weights.bin") {
		t.Fatalf("got %v", err)
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 0 {
		t.Fatalf("a failed pack left %d files", len(ents))
	}
}

// hostile builds a one-volume pack whose signed index lists the real
// entries of a small bundle but whose tar stream is written by mutate.
func hostile(t *testing.T, mutate func(tw *tar.Writer, dir string, m *manifests.Manifest)) (string, manifests.PrivateKey) {
	t.Helper()
	dir, key := makeBundle(t, map[string][]byte{"model/a.bin": []byte("hello, world"), "model/b.bin": []byte("second")})
	mdata, _ := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	sdata, _ := os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	m, _ := manifests.Parse(mdata)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		n string
		b []byte
	}{{manifests.ManifestFile, mdata}, {manifests.SignatureFile, sdata}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.n, Size: int64(len(e.b)), Mode: 0o644})
		tw.Write(e.b)
	}
	mutate(tw, dir, m)
	tw.Close()
	stream := buf.Bytes()
	vols := filepath.Join(t.TempDir(), "vols")
	os.MkdirAll(vols, 0o755)
	writeSignedPack(t, vols, key, m, mdata, sdata, stream)
	return vols, key
}

func writeSignedPack(t *testing.T, vols string, key manifests.PrivateKey, m *manifests.Manifest, mdata, sdata, stream []byte) {
	prefix := Prefix(m.Name, m.Version)
	os.WriteFile(filepath.Join(vols, DataName(prefix, 1)), stream, 0o644)
	msum := sha256.Sum256(mdata)
	vsum := sha256.Sum256(stream)
	x := &Index{SchemaVersion: IndexSchema, Name: m.Name, Version: m.Version, Created: m.Created,
		ManifestSHA256: hex.EncodeToString(msum[:]), StreamSize: int64(len(stream)), VolumeSize: 1 << 30, DataVolumes: 1,
		Volumes: []Volume{{Number: 1, Name: DataName(prefix, 1), Kind: KindData, Size: int64(len(stream)), SHA256: hex.EncodeToString(vsum[:])}},
		Entries: []Entry{{manifests.ManifestFile, int64(len(mdata)), "0644"}, {manifests.SignatureFile, int64(len(sdata)), "0644"}}}
	for _, f := range m.Files {
		x.Entries = append(x.Entries, Entry{f.Path, f.Size, f.Mode})
	}
	if err := x.validate(); err != nil {
		t.Fatal(err)
	}
	data, _ := json.MarshalIndent(x, "", "  ")
	var sigs manifests.Signatures
	sigs.Add(manifests.Sign(key, PurposeIndex, data))
	os.WriteFile(filepath.Join(vols, IndexName(prefix)), data, 0o644)
	os.WriteFile(filepath.Join(vols, IndexSigName(prefix)), sigs.Marshal(), 0o644)
}

func TestMaliciousArchives(t *testing.T) {
	reg := func(name string, body string) func(*tar.Writer, string, *manifests.Manifest) {
		return func(tw *tar.Writer, _ string, _ *manifests.Manifest) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(body)), Mode: 0o644})
			tw.Write([]byte(body))
		}
	}
	special := func(h tar.Header) func(*tar.Writer, string, *manifests.Manifest) {
		return func(tw *tar.Writer, _ string, _ *manifests.Manifest) { tw.WriteHeader(&h) }
	}
	genuine := func(tw *tar.Writer, dir string, m *manifests.Manifest) {
		for _, f := range m.Files {
			b, _ := os.ReadFile(filepath.Join(dir, f.Path))
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.Path, Size: f.Size, Mode: 0o644})
			tw.Write(b)
		}
	}
	cases := []struct {
		name   string
		mutate func(*tar.Writer, string, *manifests.Manifest)
		want   string
	}{
		{"absolute path", reg("/tmp/qwa-evil", "hello, world"), "unsafe path: absolute path"},
		{"dot-dot", reg("../qwa-evil", "hello, world"), "unsafe path"},
		{"dot-dot inside", reg("model/../../qwa-evil", "hello, world"), "unsafe path"},
		{"symlink", special(tar.Header{Typeflag: tar.TypeSymlink, Name: "model/a.bin", Linkname: "/etc/passwd"}), "symbolic link"},
		{"hard link", special(tar.Header{Typeflag: tar.TypeLink, Name: "model/a.bin", Linkname: "manifest.json"}), "hard link"},
		{"char device", special(tar.Header{Typeflag: tar.TypeChar, Name: "model/a.bin", Devmajor: 1, Devminor: 3}), "device node"},
		{"block device", special(tar.Header{Typeflag: tar.TypeBlock, Name: "model/a.bin", Devmajor: 8}), "device node"},
		{"fifo", special(tar.Header{Typeflag: tar.TypeFifo, Name: "model/a.bin"}), "FIFO"},
		{"directory", special(tar.Header{Typeflag: tar.TypeDir, Name: "model/", Mode: 0o755}), "directory entry"},
		{"bigger than the index", reg("model/a.bin", strings.Repeat("A", 1<<20)), "size 1048576, the signed index says 12"},
		{"other name", reg("model/b.bin", "second"), "the signed index lists \"model/a.bin\""},
		{"setuid", func(tw *tar.Writer, _ string, _ *manifests.Manifest) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "model/a.bin", Size: 12, Mode: 0o4755})
			tw.Write([]byte("hello, world"))
		}, "setuid"},
		{"changed content", reg("model/a.bin", "HELLO, WORLD"), "differ from the signed manifest"},
		{"extra entry", func(tw *tar.Writer, dir string, m *manifests.Manifest) {
			genuine(tw, dir, m)
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "model/c.bin", Size: 1, Mode: 0o644})
			tw.Write([]byte("c"))
		}, "the signed index lists only 4 entries"},
		{"truncated", func(tw *tar.Writer, dir string, m *manifests.Manifest) {
			b, _ := os.ReadFile(filepath.Join(dir, "model/a.bin"))
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "model/a.bin", Size: 12, Mode: 0o644})
			tw.Write(b)
		}, "ends after 3 of the 4 entries"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vols, key := hostile(t, c.mutate)
			parent := t.TempDir()
			out := filepath.Join(parent, "out")
			_, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant it to contain %q", err, c.want)
			}
			if !errors.Is(err, manifests.ErrVerification) {
				t.Fatalf("not a verification error: %v", err)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("left behind in the output's parent: %v", ents)
			}
			for _, p := range []string{"/tmp/qwa-evil", filepath.Join(filepath.Dir(parent), "qwa-evil")} {
				if _, err := os.Lstat(p); err == nil {
					t.Fatalf("escaped to %s", p)
				}
			}
			if _, err := Verify(context.Background(), vols, verifier(key), nil); err == nil {
				t.Fatal("verify accepted what unpack refused")
			}
		})
	}
}

func TestTrailingDataRefused(t *testing.T) {
	dir, key := makeBundle(t, map[string][]byte{"a": []byte("x")})
	mdata, _ := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	sdata, _ := os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	m, _ := manifests.Parse(mdata)
	var buf bytes.Buffer
	if err := writeStream(context.Background(), dir, m, mdata, sdata, entriesOf(m, mdata, sdata), &buf, nil); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("smuggled")
	vols := filepath.Join(t.TempDir(), "v")
	os.MkdirAll(vols, 0o755)
	writeSignedPack(t, vols, key, m, mdata, sdata, buf.Bytes())
	_, err := Verify(context.Background(), vols, verifier(key), nil)
	if err == nil || !strings.Contains(err.Error(), "data after the end of the archive") {
		t.Fatalf("got %v", err)
	}
}

func entriesOf(m *manifests.Manifest, mdata, sdata []byte) []Entry {
	es := []Entry{{manifests.ManifestFile, int64(len(mdata)), "0644"}, {manifests.SignatureFile, int64(len(sdata)), "0644"}}
	for _, f := range m.Files {
		es = append(es, Entry{f.Path, f.Size, f.Mode})
	}
	return es
}

func TestUnpackRefusesNonEmptyOut(t *testing.T) {
	dir, key := makeBundle(t, map[string][]byte{"a": []byte("x")})
	vols, _ := pack(t, dir, key, 0)
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "keep"), []byte("mine"), 0o644)
	if _, err := Unpack(context.Background(), vols, UnpackOptions{Out: out, Verifier: verifier(key)}); err == nil {
		t.Fatal("unpacked over a non-empty directory")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "keep")); string(b) != "mine" {
		t.Fatal("the existing file was touched")
	}
}

// FuzzReadStream feeds arbitrary bytes to the volume reader as the tar
// stream of a signed index; whatever it accepts must be exactly the bundle.
func FuzzReadStream(f *testing.F) {
	dir, key := makeBundle(f, map[string][]byte{"model/a.bin": []byte("hello, world"), "b": randomBytes(5000, 3)})
	mdata, _ := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	sdata, _ := os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	m, _ := manifests.Parse(mdata)
	entries := entriesOf(m, mdata, sdata)
	var good bytes.Buffer
	writeStream(context.Background(), dir, m, mdata, sdata, entries, &good, nil)
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:2000])
	f.Add([]byte{})
	msum := sha256.Sum256(mdata)
	x := &Index{SchemaVersion: IndexSchema, Name: m.Name, Version: m.Version, ManifestSHA256: hex.EncodeToString(msum[:]),
		StreamSize: 1 << 30, Entries: entries}
	v := verifier(key)
	f.Fuzz(func(t *testing.T, stream []byte) {
		out := t.TempDir()
		root, err := os.OpenRoot(out)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		_, err = readStream(context.Background(), bytes.NewReader(stream), x, v, root, nil)
		if err != nil {
			return
		}
		for _, fl := range m.Files {
			b, err := os.ReadFile(filepath.Join(out, fl.Path))
			want, _ := os.ReadFile(filepath.Join(dir, fl.Path))
			if err != nil || !bytes.Equal(b, want) {
				t.Fatalf("accepted a stream that does not reproduce %s", fl.Path)
			}
		}
	})
}

// FuzzParseIndex checks that the index parser never panics and that what it
// accepts is consistent.
func FuzzParseIndex(f *testing.F) {
	dir, key := makeBundle(f, map[string][]byte{"a": []byte("x")})
	out := filepath.Join(f.TempDir(), "v")
	if _, err := Pack(context.Background(), dir, PackOptions{Out: out, VolumeSize: 1 << 20, Parity: 1, Key: key}); err != nil {
		f.Fatal(err)
	}
	p, _ := FindIndex(out)
	data, _ := os.ReadFile(p)
	f.Add(data)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := ParseIndex(data)
		if err != nil {
			return
		}
		if x.ContentSize() > x.StreamSize || len(x.Volumes) != x.DataVolumes+x.ParityVolumes {
			t.Fatalf("inconsistent index accepted")
		}
	})
}
