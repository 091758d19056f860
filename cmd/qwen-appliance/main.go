// Command qwen-appliance makes an air-gapped GPU host into a trustworthy private
// LLM appliance: it bundles, installs and verifies a pinned model and inference
// server. See README.md and docs/ for the operator's guide.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
)

func main() {
	// The server's guard (see 'run') is this program started again by run;
	// it must not parse flags or set up anything else.
	if len(os.Args) > 1 && os.Args[1] == runtime.GuardArg {
		os.Exit(runtime.Guard(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
