package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// TestAuditVerifyExitCodes: a log checked without a trusted key exits 3
// unless --no-trust is given (issue 21 case 9); with the key it exits 0.
func TestAuditVerifyExitCodes(t *testing.T) {
	dir := t.TempDir()
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "audit.pub")
	if err := os.WriteFile(pub, key.Public().MarshalText(), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "audit.log")
	l, err := audit.Open(audit.Options{Path: log, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(audit.Record{RequestID: "r1", Status: 200})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"audit", "verify", log}, exitVerification},
		{[]string{"audit", "verify", "--json", log}, exitVerification},
		{[]string{"audit", "verify", "--no-trust", log}, exitOK},
		{[]string{"audit", "verify", "--trust", pub, log}, exitOK},
		{[]string{"audit", "verify", "--trust", pub, "--no-trust", log}, exitUsage},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"qwen-appliance"}, c.args...), &out, &errOut); code != c.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", c.args, code, c.code, out.String(), errOut.String())
		}
	}
}
