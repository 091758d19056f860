package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"time"
)

// Report is the result of one verify run.
type Report struct {
	SchemaVersion int       `json:"schemaVersion"`
	Tool          string    `json:"tool"`
	Host          string    `json:"host"`
	Root          string    `json:"root"`
	Bundle        string    `json:"bundle,omitempty"` // name and version verified
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	Summary       Summary   `json:"summary"`
	Results       []Result  `json:"results"`
}

// Summary counts results by status.
type Summary struct {
	Pass          int `json:"pass"`
	Fail          int `json:"fail"`
	Error         int `json:"error"`
	NotApplicable int `json:"notApplicable"`
}

// OK reports whether no check failed or errored.
func (r *Report) OK() bool { return r.Summary.Fail == 0 && r.Summary.Error == 0 }

// Options select and tune the checks.
type Options struct {
	Target Target
	// Only runs the checks whose ID matches one of these path.Match patterns
	// (e.g. "network.*"); all when empty.
	Only []string
	Tool string // tool name and version for the report
}

// ErrNoSuchCheck is returned (wrapped) when an Only pattern matches no check.
var ErrNoSuchCheck = errors.New("no check matches")

// Run executes the selected checks in ID order and returns the report. It
// returns an error only when verify itself cannot run: an invalid pattern,
// or one that matches no check (ErrNoSuchCheck).
func Run(ctx context.Context, opts Options) (*Report, error) {
	t := &opts.Target
	host, _ := os.Hostname()
	rep := &Report{SchemaVersion: 1, Tool: opts.Tool, Host: host, Root: t.Root, Started: t.now()}
	if s := t.State; s != nil && s.Bundle.Name != "" {
		rep.Bundle = fmt.Sprintf("%s version %d", s.Bundle.Name, s.Bundle.Version)
	}
	if len(opts.Only) > 0 {
		// A pattern that selects nothing (a typo: 'nework.*') would make
		// an empty run that passes: refuse it instead.
		for _, p := range opts.Only {
			any := false
			for _, c := range Checks() {
				if ok, err := selected(c.ID, []string{p}); err != nil {
					return nil, err
				} else if ok {
					any = true
					break
				}
			}
			if !any {
				return nil, fmt.Errorf("%w: --only %q", ErrNoSuchCheck, p)
			}
		}
	}
	for _, c := range Checks() {
		ok, err := selected(c.ID, opts.Only)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := run(ctx, c, t)
		rep.Results = append(rep.Results, r)
		switch r.Status {
		case Pass:
			rep.Summary.Pass++
		case Fail:
			rep.Summary.Fail++
		case Error:
			rep.Summary.Error++
		default:
			rep.Summary.NotApplicable++
		}
	}
	rep.Finished = t.now()
	return rep, nil
}

func selected(id string, only []string) (bool, error) {
	if len(only) == 0 {
		return true, nil
	}
	for _, p := range only {
		ok, err := path.Match(p, id)
		if err != nil {
			return false, fmt.Errorf("check pattern %q: %w", p, err)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}
