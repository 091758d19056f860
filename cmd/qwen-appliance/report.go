package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"
)

// jsonOutput is the --json flag of a command whose only result is a short
// line of text; report prints either.
var jsonOutput = &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}

// report prints a command's result on stdout: v as JSON under --json (keys in
// camelCase), otherwise the text format(args...).
func report(c *cli.Context, v any, format string, args ...any) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	_, err := fmt.Fprintf(c.App.Writer, format, args...)
	return err
}

// jsonOnly prints v under --json and nothing otherwise: for commands whose
// text result is a progress line on stderr, so stdout stays empty without it.
func jsonOnly(c *cli.Context, v any) error {
	if c.Bool("json") {
		return printJSON(c.App.Writer, v)
	}
	return nil
}

// wideFlag lets a table-printing command print every column in full; by
// default its tables fit texttable.Width (100) columns.
var wideFlag = &cli.BoolFlag{Name: "wide", Usage: "print tables in full, however wide (default: fit 100 columns)"}

// tableWidth is the width c's tables must fit: none with --wide.
func tableWidth(c *cli.Context) int {
	if c.Bool("wide") {
		return 0
	}
	return texttable.Width
}

// writeTable prints a table on stdout, fitting 100 columns unless --wide;
// the columns keep (identifiers an operator types again) are never cut.
func writeTable(c *cli.Context, header []string, rows [][]string, keep ...int) error {
	return texttable.Write(c.App.Writer, tableWidth(c), header, rows, keep...)
}
