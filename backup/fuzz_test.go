package backup

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"testing"

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
	if _, err := extractTar(ctx, bytes.NewReader(good), []manifests.PublicKey{k.Public()}, f.TempDir()); err != nil {
		f.Fatalf("the good seed is refused: %v", err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(mk(map[string]string{"../escape": "x"}, []string{"../escape"}))
	f.Add([]byte{})
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
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		m, err := extractTar(ctx, bytes.NewReader(data), trusted, dir)
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
