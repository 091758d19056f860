package verify

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"
)

// Formats WriteTo accepts.
var Formats = []string{"text", "json", "junit", "oscal", "prometheus"}

// WriteTo writes the report in format: text (summary first, then failures
// with remediation, then the rest), json, junit (XML for CI systems), oscal
// (a NIST OSCAL assessment-results document) or prometheus (the text
// exposition format, for the node exporter's textfile collector).
func (r *Report) WriteTo(w io.Writer, format string) error {
	switch format {
	case "text":
		return r.writeText(w)
	case "json":
		return writeJSON(w, r)
	case "junit":
		return r.writeJUnit(w)
	case "oscal":
		return writeJSON(w, r.oscal())
	case "prometheus":
		_, err := w.Write(r.Metrics())
		return err
	}
	return fmt.Errorf("report format %q: want one of %s", format, strings.Join(Formats, ", "))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (r *Report) writeText(w io.Writer) error {
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	s := r.Summary
	var b strings.Builder
	fmt.Fprintf(&b, "qwen-appliance verify: %s: %d pass, %d fail, %d error, %d not applicable\n", verdict, s.Pass, s.Fail, s.Error, s.NotApplicable)
	fmt.Fprintf(&b, "host %s, root %s", r.Host, r.Root)
	if r.Bundle != "" {
		fmt.Fprintf(&b, ", %s", r.Bundle)
	}
	fmt.Fprintf(&b, ", %s to %s\n", r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339))
	// Failures and errors first, with remediation; then the rest.
	for _, pass := range []bool{false, true} {
		for _, res := range r.Results {
			if (res.Status == Pass || res.Status == NotApplicable) != pass {
				continue
			}
			fmt.Fprintf(&b, "\n%-4s %s  [%s]\n     %s: %s\n", strings.ToUpper(shortStatus(res.Status)), res.ID, strings.Join(res.Controls, ", "), res.Title, res.Message)
			if !pass {
				for _, e := range res.Evidence {
					fmt.Fprintf(&b, "     evidence %s: %s\n", e.Name, firstLine(e.Value))
				}
				if res.Remediation != "" {
					fmt.Fprintf(&b, "     remediation: %s\n", res.Remediation)
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func shortStatus(s Status) string {
	if s == NotApplicable {
		return "n/a"
	}
	return string(s)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Errors    int         `xml:"errors,attr"`
	Skipped   int         `xml:"skipped,attr"`
	Timestamp string      `xml:"timestamp,attr"`
	Time      string      `xml:"time,attr"`
	Hostname  string      `xml:"hostname,attr"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Classname string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

func seconds(a, b time.Time) string { return fmt.Sprintf("%.3f", b.Sub(a).Seconds()) }

func (r *Report) writeJUnit(w io.Writer) error {
	s := junitSuite{Name: "qwen-appliance verify", Tests: len(r.Results), Failures: r.Summary.Fail, Errors: r.Summary.Error,
		Skipped: r.Summary.NotApplicable, Timestamp: r.Started.Format(time.RFC3339), Time: seconds(r.Started, r.Finished), Hostname: r.Host}
	for _, res := range r.Results {
		c := junitCase{Classname: "verify." + strings.SplitN(res.ID, ".", 2)[0], Name: res.ID + ": " + res.Title, Time: seconds(res.Started, res.Finished)}
		var ev strings.Builder
		fmt.Fprintf(&ev, "controls: %s\n", strings.Join(res.Controls, ", "))
		for _, e := range res.Evidence {
			fmt.Fprintf(&ev, "%s: %s\n", e.Name, e.Value)
		}
		body := ev.String()
		if res.Remediation != "" {
			body += "remediation: " + res.Remediation + "\n"
		}
		switch res.Status {
		case Fail:
			c.Failure = &junitMessage{Message: res.Message, Body: body}
		case Error:
			c.Error = &junitMessage{Message: res.Message, Body: body}
		case NotApplicable:
			c.Skipped = &junitMessage{Message: res.Message}
		default:
			c.SystemOut = res.Message + "\n" + body
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
