package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestDocsCLI runs every "$ qwen-appliance …" line of the console blocks in
// docs/cli.md and compares what it prints (stdout, then stderr) with the
// lines that follow it, so the page cannot drift from the program.
func TestDocsCLI(t *testing.T) {
	data, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	type example struct {
		args []string
		want string
	}
	var examples []example
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case l == "```console":
			in = true
		case l == "```":
			in = false
		case in && strings.HasPrefix(l, "$ "):
			examples = append(examples, example{args: strings.Fields(strings.TrimPrefix(l, "$ "))})
		case in && len(examples) > 0:
			examples[len(examples)-1].want += l + "\n"
		}
	}
	if len(examples) < 3 {
		t.Fatalf("found %d examples in docs/cli.md", len(examples))
	}
	for _, ex := range examples {
		if ex.args[0] != "qwen-appliance" {
			t.Errorf("example %q does not run qwen-appliance", ex.args)
			continue
		}
		var out, errb bytes.Buffer
		run(t.Context(), ex.args, &out, &errb)
		if got := out.String() + errb.String(); got != ex.want {
			t.Errorf("docs/cli.md: $ %s\nprints:\n%s\ndocs say:\n%s", strings.Join(ex.args, " "), got, ex.want)
		}
	}
}
