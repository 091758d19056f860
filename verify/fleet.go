package verify

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// FleetOptions say which signed report directories to compare.
type FleetOptions struct {
	Dirs    []string              // report directories written by WriteDir, one per host
	Trusted []manifests.PublicKey // the hosts' report-signing keys
	MaxAge  time.Duration         // older reports are flagged; 0: no limit
	Now     func() time.Time      // time.Now when nil
}

// FleetHost is one host's line in a fleet report.
type FleetHost struct {
	Dir      string    `json:"dir"`
	Host     string    `json:"host"`
	Verified bool      `json:"verified"` // signature and every file checked
	KeyIDs   []string  `json:"keyIds,omitempty"`
	Bundle   string    `json:"bundle,omitempty"`
	Ruleset  string    `json:"rulesetSha256,omitempty"` // the firewall ruleset install recorded
	Finished time.Time `json:"finished,omitempty"`
	Summary  Summary   `json:"summary"`
	Failed   []string  `json:"failedChecks,omitempty"` // IDs of checks that failed or errored
	// Drift lists why this host differs from the fleet or cannot be
	// trusted: another bundle or ruleset, a stale or unverifiable report.
	Drift []string `json:"drift,omitempty"`
}

// OK reports whether the host is verified, in line with the fleet and
// without failed checks.
func (h FleetHost) OK() bool { return h.Verified && len(h.Drift) == 0 && len(h.Failed) == 0 }

// FleetReport compares the hosts' latest signed verify reports.
type FleetReport struct {
	Generated time.Time   `json:"generated"`
	Bundle    string      `json:"bundle"`        // what most verified hosts run
	Ruleset   string      `json:"rulesetSha256"` // the ruleset most verified hosts have
	MaxAge    string      `json:"maxAge,omitempty"`
	Hosts     []FleetHost `json:"hosts"`
}

// Problems counts the hosts that are not OK.
func (f *FleetReport) Problems() int {
	n := 0
	for _, h := range f.Hosts {
		if !h.OK() {
			n++
		}
	}
	return n
}

// Fleet checks every report directory's signature against the trusted keys
// and every file in it, then compares the verified reports: the bundle and
// firewall ruleset most hosts have is the fleet's, and a host on another, a
// report older than MaxAge, one signed by an untrusted key or changed after
// signing is flagged as drift. It fails only when it cannot run at all.
func Fleet(ctx context.Context, o FleetOptions) (*FleetReport, error) {
	if len(o.Dirs) == 0 {
		return nil, errors.New("fleet: no report directories")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	f := &FleetReport{Generated: now().UTC()}
	if o.MaxAge > 0 {
		f.MaxAge = o.MaxAge.String()
	}
	for _, dir := range o.Dirs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h := FleetHost{Dir: dir}
		rep, ids, err := VerifyReport(ctx, dir, o.Trusted)
		switch {
		case err == nil:
			h.Verified, h.KeyIDs = true, ids
			h.Host, h.Bundle, h.Finished, h.Summary = rep.Host, rep.Bundle, rep.Finished, rep.Summary
			h.Ruleset = rulesetOf(rep)
			for _, r := range rep.Results {
				if r.Status == Fail || r.Status == Error {
					h.Failed = append(h.Failed, r.ID)
				}
			}
		case errors.Is(err, manifests.ErrVerification):
			// Named from the unverified report, so the auditor knows whom
			// to ask; nothing else in it is believed.
			h.Host = unverifiedHost(dir) + " (unverified)"
			reason := "report changed after signing"
			if errors.Is(err, manifests.ErrUntrustedKey) || errors.Is(err, manifests.ErrUnsigned) {
				reason = "report not signed by a trusted key"
			}
			h.Drift = append(h.Drift, fmt.Sprintf("%s: %v", reason, err))
		default:
			return nil, fmt.Errorf("fleet: %s: %w", dir, err)
		}
		f.Hosts = append(f.Hosts, h)
	}
	f.Bundle = majority(f.Hosts, func(h FleetHost) string { return h.Bundle })
	f.Ruleset = majority(f.Hosts, func(h FleetHost) string { return h.Ruleset })
	for i := range f.Hosts {
		h := &f.Hosts[i]
		if !h.Verified {
			continue
		}
		if h.Bundle != f.Bundle {
			h.Drift = append(h.Drift, fmt.Sprintf("bundle %q, the fleet runs %q", orNone(h.Bundle), f.Bundle))
		}
		if h.Ruleset != f.Ruleset {
			h.Drift = append(h.Drift, fmt.Sprintf("firewall ruleset %s, the fleet has %s", short(orNone(h.Ruleset)), short(f.Ruleset)))
		}
		if age := f.Generated.Sub(h.Finished); o.MaxAge > 0 && age > o.MaxAge {
			h.Drift = append(h.Drift, fmt.Sprintf("report is %s old, more than %s", age.Round(time.Hour), o.MaxAge))
		}
	}
	return f, nil
}

// rulesetOf is the ruleset hash install recorded, as the network.firewall
// check saw it.
func rulesetOf(r *Report) string {
	for _, res := range r.Results {
		if res.ID != "network.firewall" {
			continue
		}
		for _, e := range res.Evidence {
			if e.Name == "recorded sha256" {
				return e.Value
			}
		}
	}
	return ""
}

// unverifiedHost reads the host name from a report that failed
// verification, bounded, for display only.
func unverifiedHost(dir string) string {
	f, err := os.Open(filepath.Join(dir, ReportJSON))
	if err == nil {
		defer f.Close()
		var r struct {
			Host string `json:"host"`
		}
		if json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&r) == nil && r.Host != "" && len(r.Host) <= 253 && !strings.ContainsAny(r.Host, "\n\t\x1b") {
			return r.Host
		}
	}
	return filepath.Base(dir)
}

// majority is the value most verified hosts share; ties go to the value
// that sorts first, so the choice never depends on the order of the dirs.
func majority(hosts []FleetHost, key func(FleetHost) string) string {
	count := map[string]int{}
	for _, h := range hosts {
		if h.Verified {
			count[key(h)]++
		}
	}
	best, n := "", 0
	for v, c := range count {
		if c > n || c == n && v < best {
			best, n = v, c
		}
	}
	return best
}

func orNone(s string) string {
	if s == "" {
		return "none recorded"
	}
	return s
}

func short(s string) string {
	if len(s) == 64 {
		return s[:12] + "…"
	}
	return s
}

// WriteTo writes the fleet report as text (one table), json or junit (one
// test case per host, failed when it is not OK).
func (f *FleetReport) WriteTo(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(f)
	case "junit":
		return f.writeJUnit(w)
	case "text":
		return f.writeText(w)
	}
	return fmt.Errorf("fleet report format %q: want text, json or junit", format)
}

func (f *FleetReport) writeText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tBUNDLE\tRULESET\tREPORTED\tFAILED CHECKS\tDRIFT")
	for _, h := range f.Hosts {
		reported, failed := "-", "-"
		if h.Verified {
			reported = h.Finished.UTC().Format(time.RFC3339)
			failed = fmt.Sprint(len(h.Failed))
			if len(h.Failed) > 0 {
				failed += " (" + strings.Join(h.Failed, ", ") + ")"
			}
		}
		drift := "-"
		if len(h.Drift) > 0 {
			drift = strings.Join(h.Drift, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, dash(h.Bundle), dash(short(h.Ruleset)), reported, failed, drift)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d host(s): %d in line with the fleet (%s, ruleset %s), %d drifted or failing\n",
		len(f.Hosts), len(f.Hosts)-f.Problems(), dash(f.Bundle), dash(short(f.Ruleset)), f.Problems())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (f *FleetReport) writeJUnit(w io.Writer) error {
	s := junitSuite{Name: "qwen-appliance fleet", Tests: len(f.Hosts), Timestamp: f.Generated.Format(time.RFC3339), Time: "0.000"}
	sort.SliceStable(f.Hosts, func(i, j int) bool { return f.Hosts[i].Host < f.Hosts[j].Host })
	for _, h := range f.Hosts {
		c := junitCase{Classname: "fleet", Name: h.Host, Time: "0.000",
			SystemOut: fmt.Sprintf("dir: %s\nbundle: %s\nruleset: %s\nreported: %s\n", h.Dir, dash(h.Bundle), dash(h.Ruleset), h.Finished.UTC().Format(time.RFC3339))}
		var why []string
		why = append(why, h.Drift...)
		if len(h.Failed) > 0 {
			why = append(why, "failed checks: "+strings.Join(h.Failed, ", "))
		}
		if len(why) > 0 {
			s.Failures++
			c.Failure = &junitMessage{Message: why[0], Body: strings.Join(why, "\n")}
		}
		s.Cases = append(s.Cases, c)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
