package harden

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./harden -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./harden -run %s -update to accept):\n%s", path, t.Name(), got)
	}
}

func TestGoldenRuleset(t *testing.T) {
	golden(t, "ruleset-minimal.nft", Build(EgressPolicy{APIPort: 8443, SSHPort: 22}).Text())
	golden(t, "ruleset-full.nft", Build(testPolicyPortable()).Text())
}

func TestGoldenUnits(t *testing.T) {
	golden(t, FirewallUnit, FirewallUnitText())
	golden(t, RuntimeUnit, mustUnit(t, exampleRuntime()))
	golden(t, GatewayUnit, mustUnit(t, exampleGateway()))
}

func testPolicyPortable() EgressPolicy {
	return EgressPolicy{
		APIPort:     8443,
		SSHPort:     2222,
		ClientCIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("10.1.2.0/23"), netip.MustParsePrefix("fd00:10::/48"), netip.MustParsePrefix("192.0.2.7/32")},
		AdminCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("fd00:99::/61")},
		Egress: []EgressRule{
			{Proto: "udp", Prefix: netip.MustParsePrefix("10.20.0.5/32"), Port: 123},
			{Proto: "tcp", Prefix: netip.MustParsePrefix("10.20.0.6/32"), Port: 6514},
			{Proto: "udp", Prefix: netip.MustParsePrefix("fd00:10::53/128"), Port: 514},
		},
		Runtime:      &RuntimeAccess{FirstPort: RuntimePortFirst, LastPort: RuntimePortLast, UIDs: []uint32{999, 998}},
		ProbeTargets: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
	}
}

func exampleRuntime() Service {
	return Service{
		Description:    "qwen-appliance inference server (vLLM)",
		User:           RuntimeUser,
		ExecStart:      "/opt/qwen-appliance/runtime/bin/vllm serve /var/lib/qwen-appliance/models/qwen2.5-7b-instruct --host 127.0.0.1 --port 8000",
		Environment:    RuntimeEnv,
		GPU:            true,
		GPUMinors:      []int{0, 1},
		ReadOnlyPaths:  []string{"/var/lib/qwen-appliance/models"},
		ReadWritePaths: []string{"/var/lib/qwen-appliance/state"},
	}
}

func exampleGateway() Service {
	return Service{
		Description:    "qwen-appliance API gateway",
		ExecStart:      "/usr/local/bin/qwen-appliance gateway serve --listen :8443",
		AllowCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:10::/48")},
		ReadWritePaths: []string{"/var/log/qwen-appliance"},
		After:          []string{RuntimeUnit},
	}
}

func mustUnit(t *testing.T, s Service) string {
	t.Helper()
	u, err := Unit(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

const (
	maxGatewayExposure = MaxGatewayExposure
	maxRuntimeExposure = MaxRuntimeExposure
)

// exposure scores a unit file with systemd's own offline analysis.
func exposure(t *testing.T, name, text string) float64 {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v, out, err := Exposure(context.Background(), path)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return v
}

func TestUnitExposure(t *testing.T) {
	for _, c := range []struct {
		name string
		svc  Service
		max  float64
	}{
		{GatewayUnit, exampleGateway(), maxGatewayExposure},
		{RuntimeUnit, exampleRuntime(), maxRuntimeExposure},
	} {
		got := exposure(t, c.name, mustUnit(t, c.svc))
		t.Logf("%s: exposure %.1f (limit %.1f)", c.name, got, c.max)
		if got > c.max {
			t.Errorf("%s: exposure %.1f, want ≤ %.1f", c.name, got, c.max)
		}
	}
	// The score is real: a bare unit scores badly.
	if bare := exposure(t, "bare.service", "[Service]\nExecStart=/bin/true\n"); bare < 9 {
		t.Errorf("bare unit scored %.1f; the scoring is not doing its job", bare)
	}
}

func TestUnitRejectsBadInput(t *testing.T) {
	for _, s := range []Service{
		{ExecStart: "vllm serve"},
		{ExecStart: "/bin/x\nExecStartPre=/bin/sh"},
		{ExecStart: "/bin/x", Environment: []string{"A=b c"}},
		{ExecStart: "/bin/x", Environment: []string{"NOEQUALS"}},
		{ExecStart: "/bin/x", ReadOnlyPaths: []string{"relative"}},
		{ExecStart: "/bin/x --name %n"},
	} {
		if _, err := Unit(s); err == nil {
			t.Errorf("Unit(%+v) accepted bad input", s)
		}
	}
}

// TestUnitsVerify has systemd parse the units (unknown directives, bad
// values and missing binaries are errors); service binaries are swapped for
// /bin/true, which exists everywhere.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	if _, err := os.Stat(NftPath); err != nil {
		t.Skipf("%s not installed", NftPath)
	}
	dir := t.TempDir()
	for name, text := range map[string]string{
		FirewallUnit: FirewallUnitText(),
		GatewayUnit:  mustUnit(t, Service{Description: "gateway", ExecStart: "/bin/true", AllowCIDRs: exampleGateway().AllowCIDRs}),
		RuntimeUnit:  mustUnit(t, Service{Description: "runtime", ExecStart: "/bin/true", GPU: true, Environment: RuntimeEnv}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// All units are written before any is verified: the runtime and gateway
	// units require the firewall unit, which must be beside them.
	for _, name := range []string{FirewallUnit, GatewayUnit, RuntimeUnit} {
		path := filepath.Join(dir, name)
		if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}
