package fscryptmeta

import (
	"bytes"
	"encoding/hex"
	"os"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFscryptWrittenFiles decodes files Debian's fscrypt wrote, unwraps the
// policy key through the protector with the raw key, and checks that the
// bytes re-encode identically: the encoder writes what fscrypt writes.
func TestFscryptWrittenFiles(t *testing.T) {
	polData, protData, raw := readTestdata(t, "policy.pb"), readTestdata(t, "protector.pb"), readTestdata(t, "raw.key")
	prot, err := unmarshalProtector(protData)
	if err != nil {
		t.Fatal(err)
	}
	if prot.Descriptor != "e9c7b4ff8991dc8a" || prot.Source != SourceRawKey || prot.Name != "rk" {
		t.Fatalf("protector = %+v", prot)
	}
	pol, err := unmarshalPolicy(polData)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Padding: 32, Contents: ModeAES256XTS, Filenames: ModeAES256CTS, PolicyVersion: 2}
	if pol.KeyDescriptor != "5cfdc4a7bb8bdb8945d169f6c3cc4292" || pol.Options != want || len(pol.WrappedKeys) != 1 ||
		pol.WrappedKeys[0].ProtectorDescriptor != prot.Descriptor {
		t.Fatalf("policy = %+v", pol)
	}
	if got := prot.marshal(); !bytes.Equal(got, protData) {
		t.Errorf("protector re-encodes as\n%x\nwant\n%x", got, protData)
	}
	if got := pol.marshal(); !bytes.Equal(got, polData) {
		t.Errorf("policy re-encodes as\n%x\nwant\n%x", got, polData)
	}

	protKey, err := Unwrap(raw, prot.WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	if d := ProtectorDescriptor(protKey); d != prot.Descriptor {
		t.Errorf("descriptor of the protector key = %s, want %s", d, prot.Descriptor)
	}
	policyKey, err := Unwrap(protKey, pol.WrappedKeys[0].WrappedKey)
	if err != nil {
		t.Fatal(err)
	}
	id, err := keyIdentifier(policyKey)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(id[:]) != pol.KeyDescriptor {
		t.Errorf("key identifier = %x, want %s", id, pol.KeyDescriptor)
	}

	wrong := bytes.Clone(raw)
	wrong[0] ^= 1
	if _, err := Unwrap(wrong, prot.WrappedKey); err != ErrBadAuth {
		t.Errorf("wrong raw key: err = %v, want ErrBadAuth", err)
	}
	tampered := prot.WrappedKey
	tampered.EncryptedKey = bytes.Clone(tampered.EncryptedKey)
	tampered.EncryptedKey[3] ^= 0x80
	if _, err := Unwrap(raw, tampered); err != ErrBadAuth {
		t.Errorf("tampered ciphertext: err = %v, want ErrBadAuth", err)
	}
}

// TestFieldNumbers pins each field to metadata.proto's number and wire type
// by hand-assembling the expected bytes.
func TestFieldNumbers(t *testing.T) {
	w := WrappedKey{IV: []byte{1}, EncryptedKey: []byte{2}, HMAC: []byte{3}}
	wb := []byte{0x0a, 1, 1, 0x12, 1, 2, 0x1a, 1, 3} // IV = 1, encrypted_key = 2, hmac = 3
	p := Protector{Descriptor: "d", Source: SourceCustomPassphrase, Name: "n",
		Costs: &HashingCosts{Time: 1, Memory: 300, Parallelism: 4}, Salt: []byte{9}, UID: 1000, WrappedKey: w}
	want := []byte{
		0x0a, 1, 'd', // protector_descriptor = 1
		0x10, 2, // source = 2
		0x1a, 1, 'n', // name = 3
		0x22, 7, 0x10, 1, 0x18, 0xac, 0x02, 0x20, 4, // costs = 4 {time = 2, memory = 3, parallelism = 4}
		0x2a, 1, 9, // salt = 5
		0x30, 0xe8, 0x07, // uid = 6
		0x3a, byte(len(wb))} // wrapped_key = 7
	want = append(want, wb...)
	if got := p.marshal(); !bytes.Equal(got, want) {
		t.Errorf("protector:\n got %x\nwant %x", got, want)
	}

	pol := Policy{KeyDescriptor: "k", Options: Options{Padding: 32, Contents: 1, Filenames: 4, PolicyVersion: 2},
		WrappedKeys: []PolicyKey{{ProtectorDescriptor: "p", WrappedKey: w}, {ProtectorDescriptor: "q", WrappedKey: w}}}
	entry := func(d byte) []byte {
		e := []byte{0x0a, 1, d, 0x12, byte(len(wb))} // protector_descriptor = 1, wrapped_key = 2
		return append(e, wb...)
	}
	want = []byte{
		0x0a, 1, 'k', // key_descriptor = 1
		0x12, 8, 0x08, 32, 0x10, 1, 0x18, 4, 0x20, 2} // options = 2 {padding = 1, contents = 2, filenames = 3, policy_version = 4}
	for _, d := range []byte{'p', 'q'} {
		e := entry(d)
		want = append(append(want, 0x1a, byte(len(e))), e...) // wrapped_policy_keys = 3, repeated
	}
	if got := pol.marshal(); !bytes.Equal(got, want) {
		t.Errorf("policy:\n got %x\nwant %x", got, want)
	}
}

func TestWrapRoundTrip(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, InternalKeyLen)
	secret := bytes.Repeat([]byte{0xaa}, policyKeyLen)
	w, err := Wrap(kek, secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.check(policyKeyLen); err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(kek, w)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unwrap = %x, %v", got, err)
	}
	if _, err := Wrap(kek[:16], secret); err == nil {
		t.Error("a 16-byte wrapping key was accepted")
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good := readTestdata(t, "protector.pb")
	pol := readTestdata(t, "policy.pb")
	for name, data := range map[string][]byte{
		"truncated":            good[:len(good)-1],
		"length past the end":  {0x0a, 5, 'a'},
		"group wire type":      {0x0b},
		"field zero":           {0x02, 0},
		"wrong wire type":      {0x08, 1},
		"empty":                {},
		"descriptor not hex":   append([]byte{0x0a, 16}, []byte("../../etc/passwd")...),
		"unknown source":       {0x10, 9},
		"unterminated varint":  {0x10, 0x80},
		"fixed64 past the end": {0x09, 1, 2},
	} {
		if p, err := unmarshalProtector(data); err == nil {
			t.Errorf("protector %s: accepted as %+v", name, p)
		}
	}
	for name, data := range map[string][]byte{
		"truncated":     pol[:len(pol)-2],
		"no options":    pol[:34],
		"policy v1":     bytes.Replace(bytes.Clone(pol), []byte{0x20, 0x02}, []byte{0x20, 0x01}, 1),
		"padding 3":     bytes.Replace(bytes.Clone(pol), []byte{0x08, 0x20}, []byte{0x08, 0x03}, 1),
		"a protector's": good,
	} {
		if p, err := unmarshalPolicy(data); err == nil {
			t.Errorf("policy %s: accepted as %+v", name, p)
		}
	}
	// Unknown fields are skipped, as protobuf readers do.
	extra := append(bytes.Clone(good), 0x78, 1, 0x7d, 1, 2, 3, 4)
	if _, err := unmarshalProtector(extra); err != nil {
		t.Errorf("unknown fields: %v", err)
	}
}

// FuzzUnmarshal checks the decoders never panic, and that whatever they
// accept re-encodes to bytes they accept again as the same value.
func FuzzUnmarshal(f *testing.F) {
	f.Add(readTestdata(f, "policy.pb"))
	f.Add(readTestdata(f, "protector.pb"))
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := unmarshalProtector(data); err == nil {
			q, err := unmarshalProtector(p.marshal())
			if err != nil || !bytes.Equal(q.marshal(), p.marshal()) {
				t.Fatalf("protector does not round-trip: %v", err)
			}
		}
		if p, err := unmarshalPolicy(data); err == nil {
			q, err := unmarshalPolicy(p.marshal())
			if err != nil || !bytes.Equal(q.marshal(), p.marshal()) {
				t.Fatalf("policy does not round-trip: %v", err)
			}
		}
	})
}
