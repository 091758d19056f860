package bundles

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
)

// SBOMFile is the bill of materials at the root of every bundle. It is a file
// of the bundle like any other, so the manifest pins it.
const SBOMFile = "sbom.cdx.json"

// sbomFile is one file as the SBOM lists it.
type sbomFile struct {
	Path     string
	Size     int64
	SHA256   string
	Role     string // model | runtime
	Source   string // where it was fetched from
	Revision string // pinned commit, when there is one
	License  string
	Unpinned bool // hash recorded on first download, not checked against a pin
}

// spdxIDs maps the licence names specs and the hub use to SPDX identifiers.
var spdxIDs = map[string]string{
	"apache-2.0": "Apache-2.0", "mit": "MIT", "bsd-3-clause": "BSD-3-Clause",
	"bsd-2-clause": "BSD-2-Clause", "gpl-3.0": "GPL-3.0-only", "llama3.1": "",
}

func licenses(name string) *cdx.Licenses {
	if name == "" {
		return nil
	}
	if id := spdxIDs[name]; id != "" {
		return &cdx.Licenses{{License: &cdx.License{ID: id}}}
	}
	return &cdx.Licenses{{License: &cdx.License{Name: name}}}
}

// buildSBOM renders the CycloneDX JSON document for a bundle: the bundle as
// the subject, the model (with licence and revision) and the runtime as
// components, and every file with its SHA-256. The serial number is derived
// from the contents, so the same inputs give the same bytes.
func buildSBOM(s *specs.Spec, revision, tool string, created time.Time, files []sbomFile) ([]byte, error) {
	bom := cdx.NewBOM()
	bom.SpecVersion = cdx.SpecVersion1_6
	bom.Metadata = &cdx.Metadata{
		Timestamp: created.UTC().Format(time.RFC3339),
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{{
			Type: cdx.ComponentTypeApplication, Name: "qwen-appliance", Version: tool,
		}}},
		Component: &cdx.Component{
			BOMRef: "bundle", Type: cdx.ComponentTypeData, Name: s.Name,
			Version: fmt.Sprint(s.Version), Description: s.Description,
		},
	}
	model := cdx.Component{
		BOMRef: "model", Type: cdx.ComponentTypeMachineLearningModel, Name: s.Model.Name,
		Version: revision, Licenses: licenses(s.Model.License),
		Properties: &[]cdx.Property{
			{Name: "qwen-appliance:revision", Value: revision},
			{Name: "qwen-appliance:format", Value: s.Model.Format},
			{Name: "qwen-appliance:dtype", Value: s.Model.Dtype},
		},
	}
	if len(s.Model.Sources) > 0 {
		model.ExternalReferences = &[]cdx.ExternalReference{{URL: s.Model.Sources[0].URL, Type: cdx.ERTypeDistribution}}
	}
	runtime := cdx.Component{
		BOMRef: "runtime", Type: cdx.ComponentTypeApplication, Name: s.Runtime.Kind, Version: s.Runtime.Version,
	}
	var modelFiles, runtimeFiles []cdx.Component
	for _, f := range files {
		c := cdx.Component{
			BOMRef: "file:" + f.Path, Type: cdx.ComponentTypeFile, Name: f.Path,
			Hashes:   &[]cdx.Hash{{Algorithm: cdx.HashAlgoSHA256, Value: f.SHA256}},
			Licenses: licenses(f.License),
			Properties: &[]cdx.Property{
				{Name: "qwen-appliance:size", Value: fmt.Sprint(f.Size)},
				{Name: "qwen-appliance:source", Value: f.Source},
			},
		}
		if f.Revision != "" {
			c.Version = f.Revision
			*c.Properties = append(*c.Properties, cdx.Property{Name: "qwen-appliance:revision", Value: f.Revision})
		}
		if f.Unpinned {
			*c.Properties = append(*c.Properties, cdx.Property{Name: "qwen-appliance:pinned", Value: "false (hash recorded at first download)"})
		}
		if f.Role == "runtime" {
			runtimeFiles = append(runtimeFiles, c)
		} else {
			modelFiles = append(modelFiles, c)
		}
	}
	if len(modelFiles) > 0 {
		model.Components = &modelFiles
	}
	if len(runtimeFiles) > 0 {
		runtime.Components = &runtimeFiles
	}
	bom.Components = &[]cdx.Component{model, runtime}
	deps := []string{"model", "runtime"}
	bom.Dependencies = &[]cdx.Dependency{{Ref: "bundle", Dependencies: &deps}}

	var probe bytes.Buffer
	if err := encodeBOM(&probe, bom); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(probe.Bytes())
	sum[6] = sum[6]&0x0f | 0x50 // name-based UUID layout (version 5 style)
	sum[8] = sum[8]&0x3f | 0x80
	bom.SerialNumber = fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	var out bytes.Buffer
	if err := encodeBOM(&out, bom); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func encodeBOM(b *bytes.Buffer, bom *cdx.BOM) error {
	enc := cdx.NewBOMEncoder(b, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		return fmt.Errorf("encode SBOM: %w", err)
	}
	return nil
}
