package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxPlanBytes bounds a preflight report read as a plan.
const maxPlanBytes = 16 << 20

// Plan is what export takes from a 'qwen-appliance preflight --json'
// report: which bundle it sized, and the tensor-parallel degree and context
// its sizing chose on that host.
type Plan struct {
	Bundle         string
	Version        uint64
	TensorParallel int
	Context        int
}

// ParsePlan reads a preflight --json report. It refuses a report whose
// verdict is fail (that host cannot run the bundle, so its plan sizes
// nothing), one without a GPU plan, and impossible numbers.
func ParsePlan(data []byte) (Plan, error) {
	if len(data) > maxPlanBytes {
		return Plan{}, fmt.Errorf("larger than %d bytes", maxPlanBytes)
	}
	var rep struct {
		Bundle  string `json:"bundle"`
		Version uint64 `json:"version"`
		Mode    string `json:"mode"`
		Verdict string `json:"verdict"`
		Plan    *struct {
			Verdict string `json:"verdict"`
			TP      int    `json:"tensorParallel"`
			Devices []int  `json:"devices"`
			Context int    `json:"context"`
		} `json:"plan"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&rep); err != nil {
		return Plan{}, fmt.Errorf("not a preflight --json report: %w", err)
	}
	if dec.More() {
		return Plan{}, errors.New("not a preflight --json report: data after the report")
	}
	switch {
	case rep.Bundle == "" || rep.Version == 0:
		return Plan{}, errors.New("not a preflight --json report: no bundle and version")
	case rep.Verdict == "fail":
		return Plan{}, fmt.Errorf("the preflight verdict is fail: that host cannot run %s version %d, so its plan sizes nothing", rep.Bundle, rep.Version)
	case rep.Mode != "gpu" || rep.Plan == nil:
		return Plan{}, fmt.Errorf("the report has no GPU plan (mode %q): run preflight on a GPU node like the cluster's", rep.Mode)
	case rep.Plan.TP < 1 || rep.Plan.TP > 64:
		return Plan{}, fmt.Errorf("plan.tensorParallel %d is not between 1 and 64", rep.Plan.TP)
	case len(rep.Plan.Devices) != rep.Plan.TP:
		return Plan{}, fmt.Errorf("plan.devices lists %d GPUs for a tensor-parallel degree of %d", len(rep.Plan.Devices), rep.Plan.TP)
	case rep.Plan.Context < 0:
		return Plan{}, fmt.Errorf("plan.context %d is negative", rep.Plan.Context)
	case rep.Plan.Verdict == "does-not-fit":
		return Plan{}, errors.New("plan.verdict is does-not-fit")
	}
	return Plan{Bundle: rep.Bundle, Version: rep.Version, TensorParallel: rep.Plan.TP, Context: rep.Plan.Context}, nil
}
