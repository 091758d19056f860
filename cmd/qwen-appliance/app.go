package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes are a stable contract with scripts; they are listed under EXIT
// STATUS in every command's help.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitVerification = 3 // a signature, hash, expiry or rollback check failed
	exitHostUnfit    = 4 // the host does not meet the bundle's requirements
	exitCancelled    = 130
)

// exitStatusHelp is appended to every command's description.
const exitStatusHelp = `EXIT STATUS:
   0    success
   1    error (I/O, bad input, a failed step)
   2    usage error (unknown command or flag, bad flag value, missing argument or flag)
   3    verification failed (signature, hash, expiry, rollback, tampering)
   4    host does not meet the bundle's requirements
   130  cancelled (SIGINT/SIGTERM)`

// version, commit and date are stamped by 'make build' and 'make appliance'
// with -ldflags "-X main.version=… -X main.commit=… -X main.date=…".
var version, commit, date = "", "", ""

// toolVersion is the version recorded in manifests and reports.
func toolVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionLine is what --version prints: the version, the commit and the build
// date. Without -ldflags it falls back to what the go command recorded from
// version control (vcs.revision, vcs.modified, vcs.time), so a plain 'go build'
// still names its commit.
func versionLine() string {
	rev, at := commit, date
	if bi, ok := debug.ReadBuildInfo(); ok {
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				if at == "" {
					at = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if commit == "" && rev != "" && dirty {
			rev += "-dirty"
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	if at == "" {
		at = "unknown"
	}
	return fmt.Sprintf("%s, commit %s, built %s", toolVersion(), rev, at)
}

// commands holds every top-level command; each command's file adds its own in
// an init function, so adding a command never edits a shared list.
var commands []*cli.Command

func register(c *cli.Command) { commands = append(commands, c) }

// cliError carries the exit code and the operator's hint for an error that
// reached the edge of the program.
type cliError struct {
	code int
	hint string
	err  error
	json bool // the command was asked for --json output
	// reported means the command already wrote its result (a failed
	// verification report, say) to stdout; only the exit code and a line on
	// stderr remain to be given.
	reported bool
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

// withCode attaches an exit code and a hint naming the flag or step that fixes
// the error. A nil err stays nil.
func withCode(code int, err error, hint string) error {
	if err == nil {
		return nil
	}
	return &cliError{code: code, hint: hint, err: err}
}

// reportedError is an error whose details the command has already printed on
// stdout (as JSON or a report); run only sets the exit code and logs a line.
func reportedError(code int, err error, hint string) error {
	if err == nil {
		return nil
	}
	return &cliError{code: code, hint: hint, err: err, reported: true}
}

// usagef reports a usage error (exit status 2) with a hint.
func usagef(hint, format string, args ...any) error {
	return &cliError{code: exitUsage, hint: hint, err: fmt.Errorf(format, args...)}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	cmds := make([]*cli.Command, 0, len(commands))
	for _, c := range commands {
		cmds = append(cmds, copyCommand(c))
	}
	sort.Slice(cmds, func(i, j int) bool {
		ri, rj := workflowRank(cmds[i].Name), workflowRank(cmds[j].Name)
		return ri < rj || ri == rj && cmds[i].Name < cmds[j].Name
	})
	for _, c := range cmds {
		prepare(c)
	}
	return &cli.App{
		Name:    "qwen-appliance",
		Usage:   "run a private LLM on an air-gapped GPU server, and prove it",
		Version: versionLine(),
		Description: "Bundle a pinned model and inference server on a connected machine, carry it\n" +
			"across the gap, install it on the isolated host, and verify it during audits.\n\n" + exitStatusHelp,
		Commands:        cmds,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// Completion candidates come from the program itself; see
		// completion.go.
		EnableBashCompletion: true,
		OnUsageError:         onUsageError,
		// urfave/cli calls this, instead of returning an error, when a
		// command group is given a name it does not have; run turns the
		// recorded error into exit status 2.
		CommandNotFound: func(c *cli.Context, name string) {
			c.App.Metadata[notFoundKey] = unknownCommand(c, name)
		},
		Metadata: map[string]any{},
		// Errors are mapped to exit codes in run, never inside the library.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// copyCommand copies c, its flags and its subcommands, so that every app
// newApp builds starts from the definitions: urfave/cli changes the commands
// it runs (it adds a "help" subcommand and the help flag, sets HelpName) and
// the flags it parses (Value and HasBeenSet from the environment), and
// prepare wraps actions, takes required flags over and moves defaults out of
// usages. A flag value shared by several commands (storage's --dir) becomes
// one copy per command.
func copyCommand(c *cli.Command) *cli.Command {
	cp := *c
	cp.Flags = make([]cli.Flag, 0, len(c.Flags))
	for _, f := range c.Flags {
		cp.Flags = append(cp.Flags, copyFlag(f))
	}
	cp.Subcommands = nil
	for _, s := range c.Subcommands {
		cp.Subcommands = append(cp.Subcommands, copyCommand(s))
	}
	return &cp
}

// copyFlag copies the struct a flag points to (every urfave/cli flag type
// is one); what its fields point to (a default StringSlice) is shared, and
// urfave/cli copies that before parsing into it.
func copyFlag(f cli.Flag) cli.Flag {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return f
	}
	cp := reflect.New(v.Elem().Type())
	cp.Elem().Set(v.Elem())
	return cp.Interface().(cli.Flag)
}

// workflowOrder is the order of the commands in the top-level help: the order
// an operator meets them, from the connected machine to the isolated host and
// then to the auditor. A command not listed comes after these, by name; the
// contract test fails for one that is missing here.
var workflowOrder = []string{
	"keys", "bundle", "manifest", "export", // connected machine
	"preflight", "install", "status", "tls", "tokens", "kb", // isolated host
	"serve", "run", "storage", "harden", // parts install runs, for by-hand use
	"rollback", "uninstall",
	"verify", "verify-schedule", "verify-report", "audit", "backup", // auditor and operations
	"completion", "man",
}

// workflowRank is c's position in workflowOrder; unlisted names sort last.
func workflowRank(name string) int {
	for i, n := range workflowOrder {
		if n == name {
			return i
		}
	}
	return len(workflowOrder)
}

// notFoundKey is the App.Metadata key under which CommandNotFound leaves its
// usage error for run.
const notFoundKey = "qwen-appliance/unknown-command"

// unknownCommand is the usage error for "qwen-appliance instal": it names the
// command and, when a command's name is close, suggests it.
func unknownCommand(c *cli.Context, name string) error {
	path := c.App.Name
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		path = c.Command.HelpName
	}
	var subs []*cli.Command
	if c.Command != nil {
		subs = c.Command.Subcommands
	}
	if len(subs) == 0 {
		subs = c.App.Commands
	}
	hint := fmt.Sprintf("run '%s --help' for the list of commands", path)
	if s := closest(name, subs); s != "" {
		hint = fmt.Sprintf("did you mean '%s'? %s", s, hint)
	}
	return &cliError{code: exitUsage, hint: hint, err: fmt.Errorf("unknown command %q for '%s'", name, path)}
}

// closest returns the visible command name nearest to name by edit distance,
// or "" when none is near enough to be a typo: at most 2 edits, and fewer
// than half the name's length.
func closest(name string, cmds []*cli.Command) string {
	best, bestD := "", 3
	for _, c := range cmds {
		if c.Hidden || c.Name == "help" {
			continue
		}
		for _, n := range c.Names() {
			if d := editDistance(name, n); d < bestD && 2*d < len(n) {
				best, bestD = c.Name, d
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return &cliError{code: exitUsage, err: err, hint: fmt.Sprintf("run '%s --help'", c.Command.HelpName)}
}

// prepare adds the EXIT STATUS section and the usage-error mapping to c and its
// subcommands, and wraps actions so that --json also applies to errors.
func prepare(c *cli.Command) {
	c.OnUsageError = onUsageError
	if len(c.Subcommands) == 0 && c.BashComplete == nil {
		c.BashComplete = completeFlags(c)
	}
	checkRequired(c)
	for _, f := range c.Flags {
		oneDefault(f)
	}
	if c.Action != nil {
		if !strings.Contains(c.Description, "EXIT STATUS") {
			if c.Description != "" {
				c.Description += "\n\n"
			}
			c.Description += exitStatusHelp
		}
		act := c.Action
		c.Action = func(ctx *cli.Context) error {
			err := act(ctx)
			if err != nil && ctx.Bool("json") {
				var ce *cliError
				if !errors.As(err, &ce) {
					ce = &cliError{code: exitError, err: err}
					err = ce
				}
				ce.json = true
			}
			return err
		}
	}
	for _, s := range c.Subcommands {
		prepare(s)
	}
}

// oneDefault makes a flag whose usage ends by stating its default ("how long
// to wait (default 5m)", "(default: the manifest's)") show that default once:
// the text moves to the flag's DefaultText, which urfave/cli prints instead of
// the zero value it would otherwise append ("(default 5m) (default: 0s)").
func oneDefault(f cli.Flag) {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	usage, text := v.Elem().FieldByName("Usage"), v.Elem().FieldByName("DefaultText")
	if !usage.IsValid() || !text.IsValid() || usage.Kind() != reflect.String || text.String() != "" {
		return
	}
	u := usage.String()
	i := strings.LastIndex(u, " (default")
	if i < 0 || !strings.HasSuffix(u, ")") {
		return
	}
	def := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(u[i+len(" (default"):len(u)-1], ":"), " "))
	if def == "" {
		return
	}
	usage.SetString(u[:i])
	text.SetString(def)
}

// checkRequired moves the check for c's required flags from urfave/cli, which
// prints the whole help on stdout and exits 1, into c.Before, which reports a
// missing flag as a one-line usage error (exit status 2). It runs after
// --help is handled, so "CMD --help" still works without the flags. It
// changes c's flags: c must be a copy (copyCommand).
func checkRequired(c *cli.Command) {
	var names []string
	for _, f := range c.Flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			if f.Required {
				f.Required = false
				names = append(names, f.Name)
			}
		case *cli.StringSliceFlag:
			if f.Required {
				f.Required = false
				names = append(names, f.Name)
			}
		default:
			if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
				panic(fmt.Sprintf("%s: required flag %v: add its type to checkRequired", c.Name, f.Names()))
			}
		}
	}
	if len(names) == 0 {
		return
	}
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		var missing []string
		for _, n := range names {
			if !ctx.IsSet(n) {
				missing = append(missing, "--"+n)
			}
		}
		if len(missing) > 0 {
			return usagef(fmt.Sprintf("run '%s --help'", ctx.Command.HelpName),
				"missing required flag %s", strings.Join(missing, ", "))
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}

// run executes the program and maps the returned error to an exit code; it is
// the only place that decides exit codes.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	if completionAfterDashes(args) {
		return exitOK
	}
	err := app.RunContext(ctx, reorderArgs(app, args))
	if e, ok := app.Metadata[notFoundKey].(error); ok && err == nil {
		err = e
	}
	if err == nil {
		return exitOK
	}
	code, hint := exitError, ""
	var ce *cliError
	if errors.As(err, &ce) {
		code, hint = ce.code, ce.hint
	}
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		code = exitCancelled
	}
	if (ce != nil && ce.json || jsonRequested(args)) && (ce == nil || !ce.reported) {
		_ = printJSON(stdout, jsonError{Error: err.Error(), Hint: hint, ExitCode: code})
		return code
	}
	fmt.Fprintf(stderr, "qwen-appliance: error: %v\n", err)
	if hint != "" {
		fmt.Fprintf(stderr, "qwen-appliance: hint: %s\n", hint)
	}
	return code
}

// jsonError is what a failed command prints on stdout under --json, usage
// errors included, instead of the two lines on stderr: one object, so a script
// tells failure from a result by the "error" key and needs no other parser.
type jsonError struct {
	Error    string `json:"error"`
	Hint     string `json:"hint"`
	ExitCode int    `json:"exitCode"`
}

// jsonRequested reports whether args ask for --json before any "--". Usage
// errors happen before a command's flags are parsed, so the request is read
// from the words themselves.
func jsonRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		if !hasVal {
			return true
		}
		b, err := strconv.ParseBool(val)
		return err == nil && b
	}
	return false
}

// reorderArgs moves flags in front of positional arguments for the command
// being run, so that "manifest create DIR --key K" works: urfave/cli v2, like
// the standard flag package, stops parsing flags at the first positional
// argument.
func reorderArgs(app *cli.App, args []string) []string {
	// A completion request must keep its flag last, where urfave/cli looks
	// for it; moving it would run the command instead of completing it.
	if len(args) < 2 || args[len(args)-1] == "--generate-bash-completion" {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	var cmd *cli.Command
	subs := app.Commands
	// Walk down the command path: leading words that name (sub)commands.
	for len(rest) > 0 {
		var next *cli.Command
		for _, s := range subs {
			if s.HasName(rest[0]) {
				next = s
			}
		}
		if next == nil {
			break
		}
		cmd, subs = next, next.Subcommands
		out = append(out, rest[0])
		rest = rest[1:]
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
			continue
		}
		positional = append(positional, a)
	}
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}

// printJSON writes v to w as indented JSON, the shape every --json output uses.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isTerminal reports whether f is a character device (a terminal), where
// progress is drawn; pipes and files stay quiet.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
