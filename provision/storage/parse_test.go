package storage

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleMetadata(t testing.TB) []byte {
	m := &Metadata{SchemaVersion: 1, Backend: BackendFscrypt, ID: "0123456789abcdef", Created: time.Unix(1, 0).UTC(),
		Fscrypt: &FscryptInfo{PolicyVersion: 2, Contents: "AES-256-XTS", Filenames: "AES-256-CTS", Padding: 32,
			KeyIdentifier: "00112233445566778899aabbccddeeff"}}
	key := bytes.Repeat([]byte{7}, fscryptKeySize)
	if err := m.addProtector(Credential{Passphrase: []byte("pw")}, key, KDF{Time: 1, MemoryKiB: 8, Threads: 1}, time.Unix(2, 0)); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseMetadata(t *testing.T) {
	good := sampleMetadata(t)
	m, err := parseMetadata(good)
	if err != nil {
		t.Fatal(err)
	}
	if k, _, err := m.unwrap(Credential{Passphrase: []byte("pw")}); err != nil || k[0] != 7 {
		t.Fatalf("unwrap: %v", err)
	}
	for _, tc := range []struct{ edit, want string }{
		{`"backend":"fscrypt"`, `"backend":"zfs"`},
		{`"policyVersion":2`, `"policyVersion":1`},
		{`"padding":32`, `"padding":3`},
		{`"kind":"passphrase"`, `"kind":"magic"`},
		{`"schemaVersion":1`, `"schemaVersion":1,"extra":1`},
		// only a recovery protector has an fscrypt tool protector
		{`"kind":"passphrase"`, `"kind":"passphrase","fscryptProtector":"0123456789abcdef"`},
	} {
		bad := strings.Replace(string(good), tc.edit, tc.want, 1)
		if _, err := parseMetadata([]byte(bad)); err == nil {
			t.Errorf("accepted %s", tc.want)
		}
	}
	rec := strings.Replace(string(good), `"kind":"passphrase"`, `"kind":"recovery","fscryptProtector":"0123456789abcdef"`, 1)
	if _, err := parseMetadata([]byte(rec)); err != nil {
		t.Errorf("a recovery protector with an fscrypt tool protector: %v", err)
	}
	for _, bad := range []string{"0123456789ABCDEF", "../../etc/passw", "0123"} {
		if _, err := parseMetadata([]byte(strings.Replace(rec, `"fscryptProtector":"0123456789abcdef"`, `"fscryptProtector":"`+bad+`"`, 1))); err == nil {
			t.Errorf("accepted fscrypt protector %q", bad)
		}
	}
	if _, err := parseMetadata(append(good, []byte("{}")...)); err == nil {
		t.Error("accepted trailing data")
	}
}

func FuzzParseMetadata(f *testing.F) {
	f.Add(sampleMetadata(f))
	f.Add([]byte(`{"schemaVersion":1,"backend":"luks","id":"0123456789abcdef","luks":{"volume":"/v","mapperName":"qwen-store-0123456789abcdef","fsType":"ext4"},"protectors":[{"id":"0123456789abcdef","kind":"key-file","keySlot":0}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schemaVersion":1,"backend":"luks","id":"0123456789abcdef","owner":{"uid":998,"gid":998},"guest":{"dir":"kb","owner":{"uid":999,"gid":999,"name":"qwen-appliance"}},"luks":{"volume":"/v","mapperName":"qwen-store-0123456789abcdef","fsType":"ext4"},"protectors":[{"id":"0123456789abcdef","kind":"key-file","keySlot":0}]}`))
	f.Add([]byte(`{"schemaVersion":1,"backend":"luks","id":"0123456789abcdef","owner":{"uid":998,"gid":998},"guest":{"dir":"../x","owner":{"uid":998,"gid":0}},"luks":{"volume":"/v","mapperName":"qwen-store-0123456789abcdef","fsType":"ext4"},"protectors":[{"id":"0123456789abcdef","kind":"key-file","keySlot":0}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMetadata(data)
		if err != nil {
			return
		}
		if err := m.validate(); err != nil {
			t.Fatalf("parsed metadata fails validation: %v", err)
		}
		m.unwrap(Credential{Passphrase: []byte("x")}) // must not panic
		if g := m.Guest; g != nil && (g.Owner.UID == m.Owner.UID || g.Owner.GID == m.Owner.GID || g.Owner.UID <= 0 || filepath.Base(g.Dir) != g.Dir) {
			t.Fatalf("accepted guest %+v of owner %+v", g, m.Owner)
		}
	})
}

func TestRecoveryKeyRoundTrip(t *testing.T) {
	k := newRecoveryKey()
	if len(k) != 71 || strings.Count(k, "-") != 7 {
		t.Fatalf("recovery key %q", k)
	}
	b, err := parseRecoveryKey(" " + strings.ToUpper(strings.ReplaceAll(k, "-", " ")) + "\n")
	if err != nil || formatRecoveryKey(b) != k {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := parseRecoveryKey(k[:70]); err == nil {
		t.Fatal("accepted a short recovery key")
	}
}

func FuzzParseRecoveryKey(f *testing.F) {
	f.Add(newRecoveryKey())
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseRecoveryKey(s)
		if err != nil {
			return
		}
		if again, err := parseRecoveryKey(formatRecoveryKey(b)); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("printed form does not parse back: %v", err)
		}
	})
}

const luksDumpSample = `{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},
"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},
"kdf":{"type":"argon2id","time":4,"memory":32,"cpus":1,"salt":"x"}}},"tokens":{},
"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},
"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"]}},"config":{"json_size":"12288","keyslots_size":"16744448"}}`

func TestParseLUKSDump(t *testing.T) {
	h, err := parseLUKSDump([]byte(luksDumpSample))
	if err != nil {
		t.Fatal(err)
	}
	if h.Cipher != "aes-xts-plain64" || h.KeyBits != 512 || len(h.KeySlots) != 1 || h.KeySlots[0].PBKDF != "argon2id" || h.SectorSize != 4096 {
		t.Fatalf("header: %+v", h)
	}
	if _, err := parseLUKSDump([]byte(`{"keyslots":{"x":{}},"segments":{"0":{"type":"crypt"}}}`)); err == nil {
		t.Fatal("accepted a non-numeric key slot")
	}
}

func FuzzParseLUKSDump(f *testing.F) {
	f.Add([]byte(luksDumpSample))
	f.Add([]byte(`{"segments":{"0":{"type":"crypt"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseLUKSDump(data)
		if err != nil {
			return
		}
		for _, ks := range h.KeySlots {
			if ks.Slot < 0 || ks.Slot > 31 || ks.KeyBits <= 0 {
				t.Fatalf("bad key slot accepted: %+v", ks)
			}
		}
	})
}

func TestUnlockUnit(t *testing.T) {
	u, err := UnlockUnit(UnitOptions{Binary: "/usr/local/bin/qwen-appliance", Dir: "/var/lib/qwen/models",
		KeyFile: "/etc/qwen-appliance/store.key", RuntimeUnit: "qwen-runtime.service"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=oneshot", "Before=qwen-runtime.service", "RequiredBy=qwen-runtime.service",
		"ExecStart=/usr/local/bin/qwen-appliance storage unlock --dir /var/lib/qwen/models --key-file /etc/qwen-appliance/store.key",
		"ExecStop=/usr/local/bin/qwen-appliance storage lock --dir /var/lib/qwen/models"} {
		if !strings.Contains(u, want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	u, err = UnlockUnit(UnitOptions{Binary: "/usr/local/bin/qwen-appliance", Dir: "/var/lib/qwen/models",
		KeyFile: "/etc/qwen-appliance/store.key", RuntimeUnit: "qwen-runtime.service", GatewayUnit: "qwen-appliance-gateway.service"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Before=qwen-runtime.service qwen-appliance-gateway.service", "RequiredBy=qwen-runtime.service qwen-appliance-gateway.service"} {
		if !strings.Contains(u, want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	if _, err := UnlockUnit(UnitOptions{Binary: "/bin/q", Dir: "/a", KeyFile: "/k", RuntimeUnit: "r.service", GatewayUnit: "g w"}); err == nil {
		t.Error("accepted a bad gateway unit name")
	}
	if _, err := UnlockUnit(UnitOptions{Binary: "/bin/q", Dir: "/a b", KeyFile: "/k", RuntimeUnit: "r.service"}); err == nil {
		t.Error("accepted a path with a space")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze missing: the unit's syntax is not checked by systemd")
		return
	}
	// Verify with a binary that exists: the test's own.
	self, _ := os.Executable()
	u, err = UnlockUnit(UnitOptions{Binary: self, Dir: "/var/lib/qwen/models", KeyFile: "/etc/qwen-appliance/store.key", RuntimeUnit: "qwen-runtime.service"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "qwen-store-unlock.service")
	os.WriteFile(p, []byte(u), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", p).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		// Only complaints about this unit's own lines count; the binary and
		// the runtime unit do not exist on a test machine.
		if strings.Contains(line, "qwen-store-unlock.service:") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	_ = err
}
