package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// drillHostChecks reports verify's file checks as they came out, a failure
// as a failure, and every check of the running host as not applicable,
// never as a pass.
func TestDrillHostChecks(t *testing.T) {
	root := t.TempDir()
	unit := filepath.Join(root, "etc/systemd/system/qwen-appliance-gateway.service")
	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := &state.State{Root: root, Files: map[string]string{unit: strings.Repeat("0", 64)}}
	got := map[string]backup.Check{}
	for _, c := range drillHostChecks(context.Background(), root, st, &backup.Manifest{}) {
		got[c.Name] = c
	}
	if c := got["integrity.config-files"]; c.OK || c.Status != backup.Fail || !strings.Contains(c.Detail, "changed") {
		t.Errorf("an edited unit file: %+v", c)
	}
	for _, id := range []string{"network.firewall", "gateway.authentication", "storage.unlocked", "services.identity", "backup.freshness"} {
		if c := got[id]; !c.OK || c.Status != backup.NotApplicable {
			t.Errorf("%s, a check of the running host: %+v", id, c)
		}
	}
	if c := got["integrity.model-files"]; c.Status != backup.NotApplicable || !strings.Contains(c.Detail, "--include-model") {
		t.Errorf("weights not in the backup: %+v", c)
	}
	for _, c := range got {
		if c.Status == backup.Pass && !drillOffline[c.Name] {
			t.Errorf("%s passed, but it is not a file check", c.Name)
		}
	}

	// The same unit as recorded passes.
	sum, err := fileSHA256ForTest(unit)
	if err != nil {
		t.Fatal(err)
	}
	st.Files[unit] = sum
	for _, c := range drillHostChecks(context.Background(), root, st, &backup.Manifest{}) {
		if c.Name == "integrity.config-files" && (c.Status != backup.Pass || !c.OK) {
			t.Errorf("an unchanged unit file: %+v", c)
		}
	}
}

func fileSHA256ForTest(p string) (string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), nil
}
