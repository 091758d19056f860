package verify

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// oscalVersion is the OSCAL schema version the document follows.
const oscalVersion = "1.1.2"

// The OSCAL assessment-results model, reduced to the parts a verify report
// fills in.
type oscalDoc struct {
	AR oscalAR `json:"assessment-results"`
}

type oscalAR struct {
	UUID     string        `json:"uuid"`
	Metadata oscalMetadata `json:"metadata"`
	ImportAP oscalHref     `json:"import-ap"`
	Results  []oscalResult `json:"results"`
}

type oscalMetadata struct {
	Title        string `json:"title"`
	LastModified string `json:"last-modified"`
	Version      string `json:"version"`
	OSCALVersion string `json:"oscal-version"`
}

type oscalHref struct {
	Href string `json:"href"`
}

type oscalResult struct {
	UUID             string             `json:"uuid"`
	Title            string             `json:"title"`
	Description      string             `json:"description"`
	Start            string             `json:"start"`
	End              string             `json:"end"`
	ReviewedControls oscalReviewed      `json:"reviewed-controls"`
	Observations     []oscalObservation `json:"observations"`
	Findings         []oscalFinding     `json:"findings"`
}

type oscalReviewed struct {
	ControlSelections []oscalSelection `json:"control-selections"`
}

type oscalSelection struct {
	IncludeControls []oscalControl `json:"include-controls"`
}

type oscalControl struct {
	ControlID string `json:"control-id"`
}

type oscalObservation struct {
	UUID             string          `json:"uuid"`
	Title            string          `json:"title"`
	Description      string          `json:"description"`
	Methods          []string        `json:"methods"`
	Collected        string          `json:"collected"`
	RelevantEvidence []oscalEvidence `json:"relevant-evidence,omitempty"`
}

type oscalEvidence struct {
	Description string `json:"description"`
}

type oscalFinding struct {
	UUID                string         `json:"uuid"`
	Title               string         `json:"title"`
	Description         string         `json:"description"`
	Target              oscalTarget    `json:"target"`
	RelatedObservations []oscalRelated `json:"related-observations"`
}

type oscalTarget struct {
	Type     string      `json:"type"`
	TargetID string      `json:"target-id"`
	Status   oscalStatus `json:"status"`
}

type oscalStatus struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

type oscalRelated struct {
	ObservationUUID string `json:"observation-uuid"`
}

// stableUUID derives a name-based UUID (version 5 layout) from parts, so the
// same report always gives the same document.
func stableUUID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var controlRE = regexp.MustCompile(`^([A-Z]{2})-(\d+)(?:\((\d+)\))?$`)

// oscalControlID turns "SI-7(6)" into "si-7.6".
func oscalControlID(c string) string {
	m := controlRE.FindStringSubmatch(c)
	if m == nil {
		return strings.ToLower(c)
	}
	id := strings.ToLower(m[1]) + "-" + m[2]
	if m[3] != "" {
		id += "." + m[3]
	}
	return id
}

func (r *Report) oscal() oscalDoc {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	seed := r.Host + ts(r.Started)
	res := oscalResult{
		UUID:        stableUUID(seed, "result"),
		Title:       "qwen-appliance verify",
		Description: fmt.Sprintf("Automated re-verification of host %s (root %s) %s", r.Host, r.Root, r.Bundle),
		Start:       ts(r.Started),
		End:         ts(r.Finished),
	}
	seen := map[string]bool{}
	var controls []oscalControl
	for _, x := range r.Results {
		obs := oscalObservation{
			UUID: stableUUID(seed, "observation", x.ID), Title: x.ID + ": " + x.Title,
			Description: fmt.Sprintf("%s: %s", x.Status, x.Message), Methods: []string{"TEST"}, Collected: ts(x.Finished),
		}
		for _, e := range x.Evidence {
			obs.RelevantEvidence = append(obs.RelevantEvidence, oscalEvidence{Description: e.Name + ": " + e.Value})
		}
		res.Observations = append(res.Observations, obs)
		for _, c := range x.Controls {
			id := oscalControlID(c)
			if !seen[id] {
				seen[id] = true
				controls = append(controls, oscalControl{ControlID: id})
			}
			if x.Status == NotApplicable {
				continue
			}
			state := "satisfied"
			if x.Status != Pass {
				state = "not-satisfied"
			}
			res.Findings = append(res.Findings, oscalFinding{
				UUID: stableUUID(seed, "finding", x.ID, id), Title: x.Title, Description: x.Message,
				Target:              oscalTarget{Type: "objective-id", TargetID: id + "_obj", Status: oscalStatus{State: state, Reason: string(x.Status)}},
				RelatedObservations: []oscalRelated{{ObservationUUID: obs.UUID}},
			})
		}
	}
	res.ReviewedControls = oscalReviewed{ControlSelections: []oscalSelection{{IncludeControls: controls}}}
	return oscalDoc{AR: oscalAR{
		UUID:     stableUUID(seed, "assessment-results"),
		Metadata: oscalMetadata{Title: "qwen-appliance verify report", LastModified: ts(r.Finished), Version: r.Tool, OSCALVersion: oscalVersion},
		ImportAP: oscalHref{Href: "#qwen-appliance-verify-plan"},
		Results:  []oscalResult{res},
	}}
}
