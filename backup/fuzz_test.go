package backup

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// FuzzExtractTar feeds the decrypted-archive parser arbitrary bytes: it must
// never panic, never write outside its directory, and accept only what the
// trusted key signed.
func FuzzExtractTar(f *testing.F) {
	k, _ := manifests.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
	mk := func(members map[string]string, order []string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		m := &Manifest{SchemaVersion: SchemaVersion, AuditHead: AuditHead{Seq: -1}}
		for _, n := range order {
			m.Members = append(m.Members, Member{Name: n, Kind: KindConfig, Size: int64(len(members[n])), Mode: 0o600, SHA256: sha256hex([]byte(members[n]))})
			tw.WriteHeader(&tar.Header{Name: n, Mode: 0o600, Size: int64(len(members[n])), Typeflag: tar.TypeReg})
			tw.Write([]byte(members[n]))
		}
		raw, _ := Marshal(m)
		for _, x := range [][2][]byte{{[]byte(ManifestName), raw}, {[]byte(SignatureName), Sign(raw, k)}} {
			tw.WriteHeader(&tar.Header{Name: string(x[0]), Mode: 0o600, Size: int64(len(x[1])), Typeflag: tar.TypeReg})
			tw.Write(x[1])
		}
		tw.Close()
		return b.Bytes()
	}
	good := mk(map[string]string{"root/etc/a": "hello", "root/etc/b/c": "world"}, []string{"root/etc/a", "root/etc/b/c"})
	if _, err := extractTar(ctx, bytes.NewReader(good), []manifests.PublicKey{k.Public()}, f.TempDir(), keepAll, nil); err != nil {
		f.Fatalf("the good seed is refused: %v", err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(mk(map[string]string{"../escape": "x"}, []string{"../escape"}))
	f.Add([]byte{})
	f.Add(sparseTar(f))
	// A real archive's plaintext, when the round-trip fixtures are at hand.
	if id, err := age.GenerateX25519Identity(); err == nil {
		var enc bytes.Buffer
		w, _ := age.Encrypt(&enc, id.Recipient())
		w.Write(good)
		w.Close()
		r, _ := age.Decrypt(&enc, id)
		plain, _ := io.ReadAll(r)
		f.Add(plain)
	}
	trusted := []manifests.PublicKey{k.Public()}
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		dir, err := os.MkdirTemp(base, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		type result struct {
			m   *Manifest
			err error
		}
		done := make(chan result, 1)
		go func() {
			s := &auditStream{dir: dir}
			m, err := extractTar(ctx, bytes.NewReader(data), trusted, dir, keepAll, s)
			s.stop()
			done <- result{m, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("extract hangs on %d bytes:\n%s", len(data), buf[:runtime.Stack(buf, true)])
		}
		m, err := r.m, r.err
		if err != nil {
			return
		}
		for _, mb := range m.Members {
			if err := manifests.ValidatePath(mb.Name); err != nil {
				t.Fatalf("accepted member %q: %v", mb.Name, err)
			}
		}
		if _, err := os.Stat(dir); err != nil {
			t.Fatal(err)
		}
	})
}

// A sparse member (PAX GNU sparse 1.0) would expand to a terabyte of zeros
// before the signature is checked; it is refused at once.
func TestSparseMemberRefused(t *testing.T) {
	b := sparseTar(t)
	done := make(chan error, 1)
	go func() {
		_, err := extractTar(ctx, bytes.NewReader(b), nil, t.TempDir(), keepAll, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "sparse") {
			t.Fatalf("sparse member: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a sparse member is being expanded")
	}
}

// sparseTar builds by hand what archive/tar will not write: a PAX header
// declaring a GNU 1.0 sparse file of 1 TiB with no data.
func sparseTar(t testing.TB) []byte {
	rec := func(k, v string) string {
		n := len(k) + len(v) + 3
		for {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	pax := rec("GNU.sparse.major", "1") + rec("GNU.sparse.minor", "0") + rec("GNU.sparse.name", "root/etc/big") + rec("GNU.sparse.realsize", "1099511627776")
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	body := append([]byte("1\n0\n0\n"), make([]byte, 512-6)...)
	for _, f := range []struct{ name, data string }{{"PaxHeaders/big", pax}, {"root/etc/big", string(body)}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.data))
	}
	tw.Close()
	out := b.Bytes()
	out[156] = tar.TypeXHeader
	copy(out[148:156], "        ")
	sum := 0
	for _, c := range out[:512] {
		sum += int(c)
	}
	copy(out[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return out
}

// A member cut short (the tar stream ends inside it) is named as such, on
// either side of a chunk boundary, and nothing after it is read.
func TestExtractTarMemberCutShort(t *testing.T) {
	for _, have := range []int{10, chunkSize, chunkSize + 10} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		if err := tw.WriteHeader(&tar.Header{Name: "root/etc/big", Mode: 0o600, Size: 3 * chunkSize, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(bytes.Repeat([]byte{'x'}, have)) // the rest never comes
		_, err := extractTar(ctx, bytes.NewReader(b.Bytes()), nil, t.TempDir(), keepAll, nil)
		if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "read member root/etc/big") {
			t.Errorf("%d of %d bytes: %v", have, 3*chunkSize, err)
		}
	}
}
