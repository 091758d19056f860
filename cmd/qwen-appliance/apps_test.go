package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// definitions renders the registered commands (what every app newApp
// builds starts from) with their flags, field by field.
func definitions() (dump string, required int) {
	var b strings.Builder
	var walk func(path string, c *cli.Command)
	walk = func(path string, c *cli.Command) {
		path += " " + c.Name
		fmt.Fprintf(&b, "%s help=%q subcommands=%d flags=%d\n", path, c.HelpName, len(c.Subcommands), len(c.Flags))
		for _, f := range c.Flags {
			fmt.Fprintf(&b, "  %T %+v\n", f, f)
			if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
				required++
			}
		}
		for _, s := range c.Subcommands {
			walk(path, s)
		}
	}
	for _, c := range commands {
		walk("qwen-appliance", c)
	}
	return b.String(), required
}

// TestAppsIndependent: every app starts from the command definitions as
// registered. Running the CLI contract's walk (every --help) and commands
// in this process changes none of them (urfave/cli gives a command it runs
// a help subcommand and the help flag; prepare takes required flags over
// and moves defaults out of usages), so a later run still takes a flag
// after a positional argument, and a required flag is still required.
func TestAppsIndependent(t *testing.T) {
	before, _ := definitions()
	TestCLIContract(t)
	dir := t.TempDir()
	toks := filepath.Join(dir, "tokens.json")
	must := func(args ...string) string { t.Helper(); return runOK(t, args...) }
	must("tokens", "create", "--file", toks, "--name", "alice")
	// The flag after the positional argument: without it, revoke reads the
	// default token file and fails.
	must("tokens", "revoke", "alice", "--file", toks)
	if out := must("tokens", "list", "--file", toks); !strings.Contains(out, "revoked") {
		t.Errorf("alice not revoked:\n%s", out)
	}
	var errb bytes.Buffer
	if code := run(t.Context(), []string{"qwen-appliance", "kb", "embed", "--model", "m"}, &bytes.Buffer{}, &errb); code != exitUsage || !strings.Contains(errb.String(), "--url") {
		t.Errorf("kb embed without --url: exit %d, %s", code, errb.String())
	}
	after, required := definitions()
	if after != before {
		t.Errorf("running apps changed the command definitions:\nbefore\n%s\nafter\n%s", before, after)
	}
	if required == 0 {
		t.Error("no flag of the definitions is required any more: an app changed them")
	}
}
