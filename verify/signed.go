package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Files of a report directory.
const (
	ReportJSON  = "report.json"
	ReportText  = "report.txt"
	ReportJUnit = "report.junit.xml"
	ReportOSCAL = "report.oscal.json"
	EvidenceDir = "evidence"
)

// WriteDir writes the report in every format, the raw evidence of each check
// (evidence/ID.json), and a manifest of those files signed with key for the
// verify-report purpose, so that nobody can edit, add or drop a file, and a
// report cannot pass as a bundle. dir must not exist or be empty.
func WriteDir(dir string, r *Report, key manifests.PrivateKey) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("write report: %s is not empty", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, EvidenceDir), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	for name, format := range map[string]string{ReportJSON: "json", ReportText: "text", ReportJUnit: "junit", ReportOSCAL: "oscal"} {
		var b bytes.Buffer
		if err := r.WriteTo(&b, format); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	for _, res := range r.Results {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, EvidenceDir, res.ID+".json"), append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{
		Name: "verify-report", Version: 1, Created: r.Finished, Expires: r.Finished.AddDate(100, 0, 0),
		Meta: manifests.Meta{Provenance: manifests.Provenance{Tool: r.Tool, Source: "host " + r.Host}},
	})
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := manifests.WriteFor(manifests.PurposeVerifyReport, dir, m, key); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// VerifyReport checks a report directory written by WriteDir: the signature by
// one of trusted over its manifest, and every file against it. It returns the
// report. Errors match manifests.ErrVerification when the report was changed.
func VerifyReport(ctx context.Context, dir string, trusted []manifests.PublicKey) (*Report, []string, error) {
	// A report stays evidence after its manifest's nominal expiry.
	v := manifests.Verifier{Trusted: trusted, Purpose: manifests.PurposeVerifyReport, AllowExpired: true}
	s, err := v.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := manifests.CheckFiles(ctx, dir, s.Manifest, manifests.CheckOptions{}); err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, ReportJSON))
	if err != nil {
		return nil, nil, err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, nil, errors.Join(manifests.ErrVerification, fmt.Errorf("report.json: %w", err))
	}
	return &r, s.KeyIDs, nil
}
