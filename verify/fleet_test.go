package verify

import (
	"bytes"
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

const (
	rulesetA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	rulesetB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

var fleetNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// fleetReport is a signed report directory for host, as verify --report-dir
// writes it, with the bundle and firewall ruleset given.
func fleetReport(t *testing.T, key manifests.PrivateKey, host, bundle, ruleset string, finished time.Time, fail bool) string {
	t.Helper()
	status, summary := Pass, Summary{Pass: 2}
	if fail {
		status, summary = Fail, Summary{Pass: 1, Fail: 1}
	}
	r := &Report{SchemaVersion: 1, Tool: "qwen-appliance test", Host: host, Root: "/", Bundle: bundle,
		Started: finished.Add(-time.Minute), Finished: finished, Summary: summary,
		Results: []Result{
			{ID: "network.firewall", Title: "firewall", Severity: Critical, Status: Pass, Message: "live",
				Evidence: []Evidence{{"live table", "true"}, {"recorded sha256", ruleset}}, Started: finished, Finished: finished},
			{ID: "integrity.model-files", Title: "model files", Severity: Critical, Status: status, Message: "checked",
				Started: finished, Finished: finished},
		}}
	dir := filepath.Join(t.TempDir(), host)
	if err := WriteDir(dir, r, key); err != nil {
		t.Fatal(err)
	}
	return dir
}

func hostLine(f *FleetReport, host string) FleetHost {
	for _, h := range f.Hosts {
		if strings.HasPrefix(h.Host, host) {
			return h
		}
	}
	return FleetHost{}
}

// Three hosts, one drifted: it runs an older bundle and another ruleset,
// and is named; the two in line are not flagged.
func TestFleetNamesTheDriftedHost(t *testing.T) {
	key, _ := manifests.GenerateKey(nil)
	dirs := []string{
		fleetReport(t, key, "gpu-01", "qwen2.5-7b version 3", rulesetA, fleetNow.Add(-time.Hour), false),
		fleetReport(t, key, "gpu-02", "qwen2.5-7b version 3", rulesetA, fleetNow.Add(-2*time.Hour), false),
		fleetReport(t, key, "gpu-03", "qwen2.5-7b version 2", rulesetB, fleetNow.Add(-3*time.Hour), false),
	}
	f, err := Fleet(context.Background(), FleetOptions{Dirs: dirs, Trusted: []manifests.PublicKey{key.Public()}, MaxAge: 24 * time.Hour, Now: func() time.Time { return fleetNow }})
	if err != nil {
		t.Fatal(err)
	}
	if f.Bundle != "qwen2.5-7b version 3" || f.Ruleset != rulesetA || f.Problems() != 1 {
		t.Fatalf("fleet %+v", f)
	}
	for _, h := range []string{"gpu-01", "gpu-02"} {
		if l := hostLine(f, h); !l.OK() {
			t.Errorf("%s flagged: %+v", h, l)
		}
	}
	drifted := hostLine(f, "gpu-03")
	if drifted.OK() || len(drifted.Drift) != 2 ||
		!strings.Contains(drifted.Drift[0], `bundle "qwen2.5-7b version 2", the fleet runs "qwen2.5-7b version 3"`) ||
		!strings.Contains(drifted.Drift[1], "firewall ruleset bbbbbbbbbbbb…, the fleet has aaaaaaaaaaaa…") {
		t.Fatalf("gpu-03: %+v", drifted)
	}
	var text bytes.Buffer
	if err := f.WriteTo(&text, "text"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text.String(), "\n")
	if !strings.HasPrefix(lines[0], "HOST") || !strings.Contains(lines[3], "gpu-03") || !strings.Contains(lines[3], "the fleet runs") ||
		!strings.Contains(text.String(), "3 host(s): 2 in line with the fleet (qwen2.5-7b version 3, ruleset aaaaaaaaaaaa…), 1 drifted or failing") {
		t.Fatalf("table:\n%s", text.String())
	}
	var junit bytes.Buffer
	if err := f.WriteTo(&junit, "junit"); err != nil {
		t.Fatal(err)
	}
	var suites junitSuites
	if err := xml.Unmarshal(junit.Bytes(), &suites); err != nil {
		t.Fatal(err)
	}
	s := suites.Suites[0]
	if s.Tests != 3 || s.Failures != 1 || s.Cases[2].Name != "gpu-03" || s.Cases[2].Failure == nil || s.Cases[0].Failure != nil {
		t.Fatalf("junit %+v", s)
	}
}

// Each other kind of drift, one host at a time among two in line.
func TestFleetFlags(t *testing.T) {
	key, _ := manifests.GenerateKey(nil)
	stranger, _ := manifests.GenerateKey(nil)
	for _, c := range []struct {
		name string
		odd  func(t *testing.T) string
		want string
	}{
		{"a stale report", func(t *testing.T) string {
			return fleetReport(t, key, "gpu-09", "b version 1", rulesetA, fleetNow.Add(-9*24*time.Hour), false)
		}, "report is 216h0m0s old, more than 168h0m0s"},
		{"an untrusted signing key", func(t *testing.T) string {
			return fleetReport(t, stranger, "gpu-09", "b version 1", rulesetA, fleetNow, false)
		}, "report not signed by a trusted key"},
		{"a report changed after signing", func(t *testing.T) string {
			dir := fleetReport(t, key, "gpu-09", "b version 1", rulesetA, fleetNow, true)
			p := filepath.Join(dir, ReportJSON)
			data, _ := os.ReadFile(p)
			if err := os.WriteFile(p, bytes.Replace(data, []byte(`"fail": 1`), []byte(`"fail": 0`), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "report changed after signing"},
		{"no firewall evidence", func(t *testing.T) string {
			return fleetReport(t, key, "gpu-09", "b version 1", "", fleetNow, false)
		}, "firewall ruleset none recorded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dirs := []string{
				fleetReport(t, key, "gpu-01", "b version 1", rulesetA, fleetNow, false),
				fleetReport(t, key, "gpu-02", "b version 1", rulesetA, fleetNow, false),
				c.odd(t),
			}
			f, err := Fleet(context.Background(), FleetOptions{Dirs: dirs, Trusted: []manifests.PublicKey{key.Public()}, MaxAge: 7 * 24 * time.Hour, Now: func() time.Time { return fleetNow }})
			if err != nil {
				t.Fatal(err)
			}
			h := hostLine(f, "gpu-09")
			if h.OK() || f.Problems() != 1 || !strings.Contains(strings.Join(h.Drift, "; "), c.want) {
				t.Fatalf("gpu-09: %+v (problems %d), want %q", h, f.Problems(), c.want)
			}
		})
	}
	// A host whose checks fail is not OK either, though not drifted.
	f, err := Fleet(context.Background(), FleetOptions{Dirs: []string{
		fleetReport(t, key, "gpu-01", "b version 1", rulesetA, fleetNow, true),
	}, Trusted: []manifests.PublicKey{key.Public()}, Now: func() time.Time { return fleetNow }})
	if err != nil {
		t.Fatal(err)
	}
	if h := f.Hosts[0]; h.OK() || len(h.Drift) != 0 || len(h.Failed) != 1 || h.Failed[0] != "integrity.model-files" {
		t.Fatalf("failing host %+v", h)
	}
	if _, err := Fleet(context.Background(), FleetOptions{Dirs: []string{filepath.Join(t.TempDir(), "missing")}, Trusted: []manifests.PublicKey{key.Public()}}); err == nil {
		t.Fatal("a missing directory was not an error")
	}
}
