package harden

import (
	"errors"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
	"io/fs"
	"os"
	"time"
)

// Record is what apply leaves in StatePath for status and verify: the
// intended policy and the SHA-256 of the rules file rendered from it.
type Record struct {
	Version   int          `json:"version"`
	Policy    EgressPolicy `json:"policy"`
	SHA256    string       `json:"sha256"`
	RulesFile string       `json:"rulesFile"`
	AppliedAt time.Time    `json:"appliedAt"`
	// WantsDirMade says Apply created UnitDir/sysinit.target.wants for the
	// boot unit's link, so Remove takes it away again once it is empty. A
	// directory the host had before is never removed.
	WantsDirMade bool `json:"wantsDirMade,omitempty"`
}

// ErrNotApplied means no harden state is recorded under the root.
var ErrNotApplied = errors.New("harden has not been applied here")

// ParseRecord reads a state file, strictly: unknown fields, trailing data and
// an invalid policy are errors.
func ParseRecord(data []byte) (Record, error) {
	var r Record
	if err := jsonstrict.Decode(data, &r); err != nil {
		return Record{}, fmt.Errorf("parse harden state: %w", err)
	}
	if r.Version != 1 {
		return Record{}, fmt.Errorf("parse harden state: version %d is not 1", r.Version)
	}
	if err := r.Policy.Validate(); err != nil {
		return Record{}, fmt.Errorf("parse harden state: policy: %w", err)
	}
	if len(r.SHA256) != 64 {
		return Record{}, fmt.Errorf("parse harden state: sha256 %q is not 64 hex digits", r.SHA256)
	}
	return r, nil
}

// LoadRecord reads StatePath under root; ErrNotApplied when it is absent.
func LoadRecord(root Root) (Record, error) {
	data, err := os.ReadFile(root.Path(StatePath))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, ErrNotApplied
	}
	if err != nil {
		return Record{}, err
	}
	r, err := ParseRecord(data)
	if err != nil {
		return Record{}, fmt.Errorf("%s: %w", root.Path(StatePath), err)
	}
	return r, nil
}
