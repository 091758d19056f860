package manifests

import (
	"context"
	"testing"
)

func FuzzParse(f *testing.F) {
	dir := makeTree(f)
	m, err := Create(context.Background(), dir, createOpts())
	if err != nil {
		f.Fatal(err)
	}
	good, _ := Marshal(m)
	f.Add(good)
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to the same bytes and be valid.
		b, err := Marshal(m)
		if err != nil || string(b) != string(data) {
			t.Fatalf("parsed manifest does not round-trip: %v", err)
		}
		for _, file := range m.Files {
			if ValidatePath(file.Path) != nil {
				t.Fatalf("unsafe path %q accepted", file.Path)
			}
		}
	})
}

func FuzzValidatePath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/etc/passwd", "a//b", "a\\b", "model/config.json", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePath(p) != nil {
			return
		}
		if p[0] == '/' || p == ".." || len(p) > 4096 {
			t.Fatalf("accepted %q", p)
		}
		for _, el := range splitSlash(p) {
			if el == ".." || el == "." || el == "" {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}

func splitSlash(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

func FuzzParseKeysAndSignatures(f *testing.F) {
	f.Add(testKey.Public().MarshalText())
	f.Add(testKey.MarshalText())
	sigs := &Signatures{Signatures: []Signature{Sign(testKey, PurposeManifest, []byte("x"))}}
	f.Add(sigs.Marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		if keys, err := ParsePublicKeys(data); err == nil {
			for _, k := range keys {
				if keyID(k.Key) != k.ID {
					t.Fatal("key ID not checked")
				}
			}
		}
		ParsePrivateKey(data)
		if s, err := ParseSignatures(data); err == nil {
			Check(s, PurposeManifest, []byte("x"), []PublicKey{testKey.Public()}, 1)
		}
	})
}
