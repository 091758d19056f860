package main

import (
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/verify"
)

// fleetreport DIR KEY HOST BUNDLE RULESET AGE writes a signed report
// directory as 'verify --report-dir --key KEY' on HOST would have AGE ago
// (a Go duration), with every check passing and RULESET as the firewall
// ruleset install recorded: fixtures for 'verify-report --fleet'.
func cmdFleetReport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 6 {
		ts.Fatalf("usage: fleetreport DIR KEY HOST BUNDLE RULESET AGE")
	}
	key, err := manifests.LoadPrivateKey(ts.MkAbs(args[1]))
	ts.Check(err)
	age, err := time.ParseDuration(args[5])
	ts.Check(err)
	at := time.Now().UTC().Add(-age).Truncate(time.Second)
	r := &verify.Report{SchemaVersion: 1, Tool: "qwen-appliance fixture", Host: args[2], Root: "/", Bundle: args[3],
		Started: at.Add(-time.Minute), Finished: at, Summary: verify.Summary{Pass: 2},
		Results: []verify.Result{
			{ID: "integrity.model-files", Title: "installed files match the signed manifest", Severity: verify.Critical, Status: verify.Pass, Message: "every chunk matches", Started: at, Finished: at},
			{ID: "network.firewall", Title: "our nftables table is live", Severity: verify.Critical, Status: verify.Pass, Message: "live",
				Evidence: []verify.Evidence{{Name: "recorded sha256", Value: args[4]}}, Started: at, Finished: at},
		}}
	ts.Check(verify.WriteDir(ts.MkAbs(args[0]), r, key))
}
