package provision

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func prefixes(s ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

func recorded() *state.State {
	return &state.State{
		Firewall: state.Firewall{ProbeTargets: []string{"192.0.2.1"}},
		Settings: &state.Settings{Listen: "0.0.0.0:8443", MetricsListen: "127.0.0.1:9464", Host: "llm.example",
			ClientCIDRs: []string{"10.30.0.0/16"}, AdminCIDRs: []string{"10.9.0.0/24"}, Egress: []string{"udp:10.0.0.5/32:123"}},
	}
}

func TestResolveSettingsFirstInstallUsesDefaults(t *testing.T) {
	o := Options{}
	diff, err := resolveSettings(&o, nil, harden.Root(t.TempDir()))
	if err != nil || len(diff) != 0 {
		t.Fatalf("diff %v, err %v", diff, err)
	}
	if o.Listen != DefaultListen || o.MetricsListen != DefaultMetricsListen || o.Host != DefaultHost || o.ClientCIDRs != nil || o.ProbeTargets != nil {
		t.Fatalf("defaults: %+v", o)
	}
}

// An upgrade run with no setting flags keeps everything the installation
// recorded: the allowlists (SSH included) and the probe address.
func TestResolveSettingsUpgradeKeepsRecorded(t *testing.T) {
	o := Options{}
	diff, err := resolveSettings(&o, recorded(), harden.Root(t.TempDir()))
	if err != nil || len(diff) != 0 {
		t.Fatalf("diff %v, err %v", diff, err)
	}
	if o.Listen != "0.0.0.0:8443" || o.Host != "llm.example" || !slices.Equal(o.ClientCIDRs, prefixes("10.30.0.0/16")) ||
		!slices.Equal(o.AdminCIDRs, prefixes("10.9.0.0/24")) || len(o.Egress) != 1 || o.Egress[0].String() != "udp:10.0.0.5/32:123" ||
		!slices.Equal(o.ProbeTargets, []string{"192.0.2.1"}) {
		t.Fatalf("not kept: %+v", o)
	}
	if got := settingsOf(o); !equalSettings(*got, *recorded().Settings) {
		t.Fatalf("recorded again as %+v", got)
	}
}

func equalSettings(a, b state.Settings) bool {
	return a.Listen == b.Listen && a.MetricsListen == b.MetricsListen && a.Host == b.Host &&
		slices.Equal(a.ClientCIDRs, b.ClientCIDRs) && slices.Equal(a.AdminCIDRs, b.AdminCIDRs) && slices.Equal(a.Egress, b.Egress)
}

func TestResolveSettingsChangesAreListed(t *testing.T) {
	o := Options{Listen: "0.0.0.0:9443", ClientCIDRs: prefixes("10.40.0.0/16"), AdminCIDRs: prefixes(), ProbeTargets: []string{}}
	diff, err := resolveSettings(&o, recorded(), harden.Root(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range diff {
		got = append(got, d.String())
	}
	want := []string{"listen: 0.0.0.0:8443 -> 0.0.0.0:9443", "allow-cidr: 10.30.0.0/16 -> 10.40.0.0/16",
		"admin-cidr: 10.9.0.0/24 -> (none)", "probe: 192.0.2.1 -> (none)"}
	if !slices.Equal(got, want) {
		t.Fatalf("diff\n got %q\nwant %q", got, want)
	}
	if len(o.AdminCIDRs) != 0 || len(o.Egress) != 1 {
		t.Fatalf("a cleared list must stay cleared, an unset one kept: %+v", o)
	}
	sups := newSupervisors(realSystem(), layout{})
	in := &installer{settings: diff, sup: sups.procs}
	if !in.gatewaySettingsChanged() {
		t.Error("a new --listen must restart the gateway")
	}
	in.settings = diff[1:]
	if in.gatewaySettingsChanged() {
		t.Error("CIDRs are the firewall's business under the process supervisor; the gateway need not restart")
	}
	in.sup = sups.units
	if !in.gatewaySettingsChanged() {
		t.Error("under systemd the gateway unit's IP allowlist holds the CIDRs: it must restart")
	}
}

// An installation made before settings were recorded is read from its
// gateway addresses and harden's firewall record, so its first upgrade
// keeps its allowlists too.
func TestResolveSettingsLegacyInstallation(t *testing.T) {
	root := harden.Root(t.TempDir())
	policy := harden.EgressPolicy{APIPort: 8443, SSHPort: 22, ClientCIDRs: prefixes("10.30.0.0/16"), AdminCIDRs: prefixes("10.9.0.0/24")}
	if err := persistRecordForTest(root, policy); err != nil {
		t.Fatal(err)
	}
	prev := &state.State{Gateway: state.Gateway{Service: state.Service{Listen: []string{"0.0.0.0:8443", "127.0.0.1:9464"}}}}
	o := Options{}
	diff, err := resolveSettings(&o, prev, root)
	if err != nil || len(diff) != 0 {
		t.Fatalf("diff %v err %v", diff, err)
	}
	if o.Listen != "0.0.0.0:8443" || !slices.Equal(o.ClientCIDRs, prefixes("10.30.0.0/16")) || !slices.Equal(o.AdminCIDRs, prefixes("10.9.0.0/24")) {
		t.Fatalf("legacy settings not kept: %+v", o)
	}
}

// persistRecordForTest writes the record harden.Apply leaves.
func persistRecordForTest(root harden.Root, p harden.EgressPolicy) error {
	data, err := json.Marshal(harden.Record{Version: 1, Policy: p, SHA256: harden.Build(p).Hash(), RulesFile: harden.RulesPath})
	if err != nil {
		return err
	}
	path := root.Path(harden.StatePath)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func TestPrecheck(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	base := func() *installer {
		o := Options{Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", euid: func() int { return 0 }}
		return &installer{o: o, log: io.Discard}
	}

	if err := base().precheck(); err != nil {
		t.Fatalf("a fit host: %v", err)
	}

	in := base()
	in.o.euid = func() int { return 1000 }
	if err := in.precheck(); !errors.Is(err, ErrNotRoot) {
		t.Fatalf("non-root: %v", err)
	}

	in = base()
	in.o.Listen = "192.0.2.77:8443" // an address no interface here has
	if err := in.precheck(); err == nil || errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), "192.0.2.77:8443") {
		t.Fatalf("an address this host lacks: %v", err)
	}

	in = base()
	in.o.Listen = held.Addr().String()
	if err := in.precheck(); !errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Fatalf("held port: %v", err)
	}

	// A remote session through this namespace (to loopback, which every
	// namespace has) that no admin CIDR covers would be cut off.
	session := &harden.Session{Client: netip.MustParseAddr("10.9.5.5"), ClientPort: 50000, ServerPort: 22, Server: netip.MustParseAddr("127.0.0.1")}
	in = base()
	in.o.Session = session
	if err := in.precheck(); !errors.Is(err, harden.ErrLockout) {
		t.Fatalf("lockout: %v", err)
	}
	in = base()
	in.o.Session, in.o.AdminCIDRs = session, prefixes("10.9.0.0/16")
	if err := in.precheck(); err != nil {
		t.Fatalf("covered by --admin-cidr: %v", err)
	}
	in = base()
	in.o.Session, in.o.ConfirmTimeout = session, 1
	if err := in.precheck(); err != nil {
		t.Fatalf("with a confirmation window: %v", err)
	}
	in = base()
	other := *session
	other.Server = netip.MustParseAddr("192.0.2.77")
	in.o.Session = &other
	if err := in.precheck(); err != nil || in.o.Session != nil {
		t.Fatalf("a session arriving outside this namespace cannot be cut off: %v", err)
	}
}
