package harden

import (
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestFindSessionFromEnv(t *testing.T) {
	s, err := FindSession(envOf(map[string]string{"SSH_CONNECTION": "192.0.2.10 50000 10.0.0.1 22"}))
	if err != nil || s == nil || s.Client != netip.MustParseAddr("192.0.2.10") || s.ServerPort != 22 {
		t.Fatalf("%+v %v", s, err)
	}
	s, err = FindSession(envOf(map[string]string{"SSH_CLIENT": "2001:db8::7 50000 2222"}))
	if err != nil || s == nil || s.ServerPort != 2222 || s.ClientPort != 50000 {
		t.Fatalf("SSH_CLIENT: %+v %v", s, err)
	}
	if s, err := FindSession(envOf(map[string]string{"SSH_CONNECTION": ""})); s != nil || err != nil {
		t.Fatalf("empty SSH_CONNECTION must mean no session: %+v %v", s, err)
	}
	if _, err := FindSession(envOf(map[string]string{"SSH_CLIENT": "1.2.3.4"})); err == nil {
		t.Fatal("short SSH_CLIENT accepted")
	}
}

// TestFindSessionThroughSudo re-runs the test binary under a parent that has
// SSH_CONNECTION while the child does not, as `sudo` leaves it.
func TestFindSessionThroughSudo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if os.Getenv("HARDEN_SESSION_CHILD") == "1" {
		s, err := FindSession(os.LookupEnv)
		if err != nil || s == nil {
			t.Fatalf("child found no session: %v", err)
		}
		os.Stdout.WriteString("CHILD-SESSION " + s.Client.String() + "\n")
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `env -u SSH_CONNECTION -u SSH_CLIENT HARDEN_SESSION_CHILD=1 "$0" -test.run '^TestFindSessionThroughSudo$' -test.v; true`, exe)
	cmd.Env = append(os.Environ(), "SSH_CONNECTION=198.51.100.4 40000 10.0.0.1 22")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD-SESSION 198.51.100.4") {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestParentPID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	got, err := parentPID(os.Getpid())
	if err != nil || got != os.Getppid() {
		t.Fatalf("parentPID = %d, %v; want %d", got, err, os.Getppid())
	}
}
