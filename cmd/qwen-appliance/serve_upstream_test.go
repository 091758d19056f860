package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve refuses an upstream that would leave the host unauthenticated as a
// usage error (exit 2), naming the flag; unreadable files stay failures.
func TestServeUpstreamExitCodes(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok.json")
	if code := run(context.Background(), []string{"qwen-appliance", "tokens", "create", "--file", tok, "--name", "a"}, &bytes.Buffer{}, &bytes.Buffer{}); code != exitOK {
		t.Fatalf("tokens create: %d", code)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "upstream"), []byte("http://192.0.2.1:8000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"qwen-appliance", "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--tokens", tok, "--audit-log", filepath.Join(dir, "audit.log")}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--upstream", "http://10.1.2.3:8000"}, exitUsage, "hint: fix --upstream;"},
		{[]string{"--upstream", "https://qwen-runtime:8000"}, exitUsage, "hint: fix --upstream-ca;"},
		{[]string{"--upstream-file", filepath.Join(dir, "upstream")}, exitUsage, "hint: fix the upstream in --upstream-file"},
		{[]string{"--upstream", "https://qwen-runtime:8000", "--upstream-ca", filepath.Join(dir, "ca.crt"), "--upstream-cert", "c", "--upstream-key", "k"}, exitError, "holds no PEM certificate"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(append([]string{}, base...), c.args...), &out, &errOut)
		if code != c.code || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, want %d with %q\n%s", c.args, code, c.code, c.want, errOut.String())
		}
	}
}
