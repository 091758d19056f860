package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/qwen-appliance/qwen-appliance/kb"
)

func kbEmbed(c *cli.Context) (err error) {
	k, closeKB, err := openKB(c, false)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeKB()) }()
	var progress func(int)
	if f, ok := c.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		progress = func(done int) { fmt.Fprintf(f, "\rqwen-appliance: %d chunks embedded", done) }
		defer fmt.Fprintln(f)
	}
	n, err := k.EmbedChunks(c.Context, &kb.Embedder{URL: c.String("url"), Model: c.String("model")}, progress)
	if err != nil {
		return withCode(exitError, fmt.Errorf("%w (%d chunks were embedded and kept)", err, n), "check --url and --model, and that the runtime is running")
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{"embedded": n, "model": c.String("model")})
	}
	fmt.Fprintf(c.App.Writer, "%d chunks embedded with %s\n", n, c.String("model"))
	return nil
}
