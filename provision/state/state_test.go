package state

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() *State {
	return &State{
		Updated: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC), Root: "/",
		Bundle:      Bundle{Name: "demo", Version: 2, ManifestSHA256: strings.Repeat("ab", 32), Dir: "/store/releases/demo-v2"},
		Previous:    &Bundle{Name: "demo", Version: 1, Dir: "/store/releases/demo-v1"},
		ServiceUser: "qwen-appliance", ServiceUID: 999, ServiceGID: 999,
		Store:    Store{Dir: "/store", Backend: "fscrypt"},
		Firewall: Firewall{Table: "inet qwen_appliance", RulesetSHA256: strings.Repeat("cd", 32), ProbeTargets: []string{"192.0.2.1"}},
		Files:    map[string]string{"/etc/nftables.d/qwen.nft": strings.Repeat("ef", 32)},
		Runtime:  Service{Name: "runtime", PID: 42, Listen: []string{"127.0.0.1:40000"}},
		Gateway:  Gateway{Service: Service{Name: "gateway", PID: 43}, URL: "https://127.0.0.1:8443"},
		Settings: &Settings{Listen: "0.0.0.0:8443", MetricsListen: "127.0.0.1:9464", Host: "localhost", ClientCIDRs: []string{"10.20.0.0/16"}},
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	root := t.TempDir()
	if _, err := Load(root); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("empty root: %v", err)
	}
	want := sample()
	if err := Save(root, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(Path(root))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
	if fi, _ := os.Stat(filepath.Dir(Path(root))); fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %v", fi.Mode())
	}
	got, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":  `{"schemaVersion":1,"bundle":{},"store":{},"firewall":{},"runtime":{},"gateway":{},"extra":1}`,
		"other version":  `{"schemaVersion":2}`,
		"trailing data":  `{"schemaVersion":1} {}`,
		"not JSON":       `schemaVersion: 1`,
		"wrong type":     `{"schemaVersion":"1"}`,
		"duplicate junk": `{"schemaVersion":1,"bundle":{"version":-1}}`,
		// encoding/json alone takes these for schemaVersion, keeping the last.
		"key case":      `{"sChemAVersion":1}`,
		"duplicate key": `{"schemaVersion":1,"schemaVersion":1}`,
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted %s", name, in)
		}
	}
}

// FuzzParse: whatever the file holds, Parse returns a state or an error,
// never panics, and an accepted state encodes and parses to the same encoding.
func FuzzParse(f *testing.F) {
	data, _ := json.Marshal(sample())
	var withVersion map[string]any
	json.Unmarshal(data, &withVersion)
	withVersion["schemaVersion"] = SchemaVersion
	seed, _ := json.Marshal(withVersion)
	f.Add(seed)
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{"schemaVersion":1,"settings":{"listen":"x","metricsListen":"","host":""}}`))
	f.Add([]byte(`{"schemaVersion":2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("an accepted state does not encode: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("an accepted state does not parse after encoding: %v\n%s", err, out)
		}
		// Compared encoded: an empty map and a missing one mean the same.
		if out2, _ := json.Marshal(again); string(out) != string(out2) {
			t.Fatalf("not stable:\n%s\n%s", out, out2)
		}
	})
}
