package export

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlanSetsTensorParallel(t *testing.T) {
	bundle, v := testBundle(t)
	o := testOptions(t, bundle, v)
	o.Plan = []byte(`{"bundle":"tiny-qwen","version":3,"mode":"gpu","verdict":"warn","checks":[],"plan":{"verdict":"fits","tensorParallel":2,"devices":[3,5],"context":8192},"host":{}}`)
	o.PlanName = "h100-node.json"
	res, err := Helm(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.TensorParallel != 2 || !strings.Contains(res.TPSource, "h100-node.json") {
		t.Fatalf("tensor parallel %d from %q", res.TensorParallel, res.TPSource)
	}
	values, _ := os.ReadFile(filepath.Join(res.Chart, "values.yaml"))
	for _, want := range []string{"tensorParallel: 2", "maxModelLen: 8192"} {
		if !strings.Contains(string(values), want) {
			t.Errorf("values.yaml lacks %q", want)
		}
	}
	// --tensor-parallel wins over the plan.
	o = testOptions(t, bundle, v)
	o.Plan, o.PlanName, o.TensorParallel = []byte(`{"bundle":"tiny-qwen","version":3,"mode":"gpu","verdict":"pass","plan":{"tensorParallel":2,"devices":[0,1],"context":8192}}`), "p.json", 4
	if res, err = Helm(context.Background(), o); err != nil || res.TensorParallel != 4 {
		t.Fatalf("tensor parallel %v, err %v", res, err)
	}
}

func TestParsePlanRefuses(t *testing.T) {
	for name, doc := range map[string]string{
		"fail verdict":     `{"bundle":"b","version":1,"mode":"gpu","verdict":"fail","plan":{"tensorParallel":1,"devices":[0]}}`,
		"cpu report":       `{"bundle":"b","version":1,"mode":"cpu","verdict":"pass"}`,
		"devices mismatch": `{"bundle":"b","version":1,"mode":"gpu","verdict":"pass","plan":{"tensorParallel":2,"devices":[0]}}`,
		"zero degree":      `{"bundle":"b","version":1,"mode":"gpu","verdict":"pass","plan":{"tensorParallel":0,"devices":[]}}`,
		"trailing data":    `{"bundle":"b","version":1,"mode":"gpu","verdict":"pass","plan":{"tensorParallel":1,"devices":[0]}} {}`,
		"not json":         `CHECK REQUIRED FOUND`,
		"no bundle":        `{"mode":"gpu","plan":{"tensorParallel":1,"devices":[0]}}`,
	} {
		if _, err := ParsePlan([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParsePlan(f *testing.F) {
	f.Add([]byte(`{"bundle":"b","version":1,"mode":"gpu","verdict":"pass","plan":{"verdict":"fits","tensorParallel":2,"devices":[0,1],"context":8192}}`))
	f.Add([]byte(`{"bundle":"b","version":1,"mode":"cpu","verdict":"fail"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePlan(data)
		if err == nil && (p.TensorParallel < 1 || p.TensorParallel > 64 || p.Bundle == "" || p.Version == 0 || p.Context < 0) {
			t.Fatalf("accepted an impossible plan %+v", p)
		}
	})
}
