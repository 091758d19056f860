package harden

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"
)

// Status compares the live table with the intended one and the rules file
// with the hash recorded when it was applied.
type Status struct {
	Applied    bool         `json:"applied"` // a state record exists
	Policy     EgressPolicy `json:"policy"`
	AppliedAt  time.Time    `json:"appliedAt,omitzero"`
	LiveTable  bool         `json:"liveTable"` // table inet qwen_appliance exists
	InSync     bool         `json:"inSync"`    // live table equals the intended one
	Diff       []string     `json:"diff,omitempty"`
	RulesFile  string       `json:"rulesFile"`
	SHA256     string       `json:"sha256,omitempty"` // recorded at apply
	FileSHA256 string       `json:"fileSHA256,omitempty"`
	FileIntact bool         `json:"fileIntact"` // the rules file hashes to SHA256
	Problems   []string     `json:"problems,omitempty"`
}

// OK reports whether everything matches what was applied.
func (s Status) OK() bool { return len(s.Problems) == 0 }

// Check reads the live table and the files under root. With nothing applied
// the intended state is "no table of ours".
func Check(nf Netfilter, root Root) (Status, error) {
	s := Status{RulesFile: root.Path(RulesPath)}
	rec, err := LoadRecord(root)
	var want *Table
	switch {
	case errors.Is(err, ErrNotApplied):
	case err != nil:
		return Status{}, err
	default:
		s.Applied, s.Policy, s.AppliedAt, s.SHA256 = true, rec.Policy, rec.AppliedAt, rec.SHA256
		want = Build(rec.Policy).Table()
	}
	st, err := nf.Live()
	if err != nil {
		return Status{}, fmt.Errorf("status: %w", err)
	}
	s.LiveTable = st.Table != nil
	s.Diff = Diff(st.Table, want)
	s.InSync = len(s.Diff) == 0
	if !s.InSync {
		s.Problems = append(s.Problems, "the live firewall differs from the intended one")
	}
	if s.Applied {
		data, err := os.ReadFile(s.RulesFile)
		if err == nil {
			sum := sha256.Sum256(data)
			s.FileSHA256 = hex.EncodeToString(sum[:])
			s.FileIntact = s.FileSHA256 == s.SHA256
		}
		if !s.FileIntact {
			s.Problems = append(s.Problems, fmt.Sprintf("rules file %s is missing or does not hash to the recorded sha256", s.RulesFile))
		}
		if s.Applied && Build(rec.Policy).Hash() != rec.SHA256 {
			s.Problems = append(s.Problems, "the recorded sha256 does not match the recorded policy")
		}
	}
	return s, nil
}
