package verify

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// Status is the outcome of one check.
type Status string

// Check outcomes.
const (
	Pass          Status = "pass"
	Fail          Status = "fail"
	Error         Status = "error"          // the check could not run
	NotApplicable Status = "not-applicable" // nothing to check on this host
)

// Severity ranks a failed check.
type Severity string

// Severities.
const (
	Critical Severity = "critical"
	High     Severity = "high"
	Medium   Severity = "medium"
	Low      Severity = "low"
)

// Evidence is one fact a check saw: a value, a hash, a line of output.
type Evidence struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Outcome is what a check's Run returns.
type Outcome struct {
	Status   Status
	Message  string
	Evidence []Evidence
}

// Check is one registered audit check.
type Check struct {
	ID          string   // stable, e.g. "integrity.model-files"
	Title       string   // what it proves, in one line
	Severity    Severity // how bad a failure is
	Controls    []string // NIST SP 800-53 rev. 5 controls it supports
	Rationale   string   // why an auditor cares
	Remediation string   // what to do when it fails
	Run         func(ctx context.Context, t *Target) Outcome
}

// Target is what the checks inspect: the installation record and how to reach
// the running host.
type Target struct {
	Root    string       // install root ("/" on a real host)
	State   *state.State // the installation record
	Trusted []manifests.PublicKey
	Full    bool // hash every chunk rather than a sample
	Now     func() time.Time
	NVML    gpu.NVML // the system's NVML when nil; tests pass go-nvml's mock
}

func (t *Target) now() time.Time {
	if t.Now != nil {
		return t.Now().UTC()
	}
	return time.Now().UTC()
}

// Result is one check's result in a report.
type Result struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Severity    Severity   `json:"severity"`
	Controls    []string   `json:"controls"`
	Status      Status     `json:"status"`
	Message     string     `json:"message"`
	Evidence    []Evidence `json:"evidence,omitempty"`
	Remediation string     `json:"remediation,omitempty"` // given when the check did not pass
	Started     time.Time  `json:"started"`
	Finished    time.Time  `json:"finished"`
}

// registry holds every check, added by the files that define them.
var registry []Check

func register(cs ...Check) { registry = append(registry, cs...) }

// Checks returns every registered check, sorted by ID.
func Checks() []Check {
	out := append([]Check(nil), registry...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// run executes one check, turning a panic into an Error result.
func run(ctx context.Context, c Check, t *Target) (r Result) {
	r = Result{ID: c.ID, Title: c.Title, Severity: c.Severity, Controls: c.Controls, Started: t.now()}
	defer func() {
		if p := recover(); p != nil {
			r.Status, r.Message = Error, fmt.Sprintf("check panicked: %v", p)
		}
		r.Finished = t.now()
		if r.Status != Pass && r.Status != NotApplicable {
			r.Remediation = c.Remediation
		}
	}()
	o := c.Run(ctx, t)
	r.Status, r.Message, r.Evidence = o.Status, o.Message, o.Evidence
	return r
}

func pass(msg string, ev ...Evidence) Outcome {
	return Outcome{Status: Pass, Message: msg, Evidence: ev}
}
func fail(msg string, ev ...Evidence) Outcome {
	return Outcome{Status: Fail, Message: msg, Evidence: ev}
}
func errored(err error, ev ...Evidence) Outcome {
	return Outcome{Status: Error, Message: err.Error(), Evidence: ev}
}
func notApplicable(msg string) Outcome { return Outcome{Status: NotApplicable, Message: msg} }
func ev(name string, format string, args ...any) Evidence {
	return Evidence{Name: name, Value: fmt.Sprintf(format, args...)}
}
