// Command qwen-appliance makes an air-gapped GPU host into a trustworthy private
// LLM appliance: it bundles, installs and verifies a pinned model and inference
// server. See README.md for the operator's guide.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
