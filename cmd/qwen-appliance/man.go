package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "man",
		Usage: "print the qwen-appliance(1) manual page, made from the commands' help",
		Description: `Prints the manual page (roff) generated from the same definitions as --help,
so the two never disagree: every command's usage, description, examples and
options, and the exit status table once. install puts it at
/usr/share/man/man1/qwen-appliance.1; 'make man' writes bin/qwen-appliance.1.

Examples:
   qwen-appliance man | man -l -
   qwen-appliance man > /usr/local/share/man/man1/qwen-appliance.1`,
		Action: func(c *cli.Context) error {
			_, err := io.WriteString(c.App.Writer, manPage(c.App))
			return err
		},
	})
}

// manPage renders app as a section 1 manual page in plain man(7) macros,
// which man-db, groff and mandoc all read. Prose is left for the formatter
// to fill; indented lines (examples, tables) are kept as they are.
func manPage(app *cli.App) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH QWEN-APPLIANCE 1 \"\" %q \"User Commands\"\n", app.Name+" "+toolVersion())
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", app.Name, roffText(app.Usage))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n.I command\n[\\fIoptions\\fR] [\\fIarguments\\fR]\n.br\n.B %s\n\\-\\-help | \\-\\-version\n", app.Name, app.Name)
	b.WriteString(".SH DESCRIPTION\n")
	roffBlock(&b, withoutExitStatus(app.Description))
	b.WriteString(".SH COMMANDS\nEach command's \\fB\\-\\-help\\fR prints the same text.\n")
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := path + " " + c.Name
			if subs := subcommands(c); len(subs) > 0 {
				walk(p, subs)
				continue
			}
			fmt.Fprintf(&b, ".SS \"%s\"\n", roffText(p))
			fmt.Fprintf(&b, "%s.\n", roffText(c.Usage))
			usage := c.UsageText
			if usage == "" {
				usage = p + " [options]"
				if c.ArgsUsage != "" {
					usage += " " + c.ArgsUsage
				}
			}
			roffBlock(&b, "Usage:\n   "+strings.ReplaceAll(strings.TrimSpace(usage), "\n", "\n   "))
			roffBlock(&b, withoutExitStatus(c.Description))
			for _, f := range c.VisibleFlags() {
				roffFlag(&b, f)
			}
		}
	}
	walk(app.Name, app.Commands)
	b.WriteString(".SH \"EXIT STATUS\"\nEvery command uses the same codes.\n")
	roffBlock(&b, strings.TrimPrefix(exitStatusHelp, "EXIT STATUS:\n"))
	fmt.Fprintf(&b, ".SH \"SEE ALSO\"\n.BR nft (8),\n.BR fscrypt (8),\n.BR systemd.exec (5)\n")
	return b.String()
}

// withoutExitStatus drops the EXIT STATUS table prepare appends to every
// description: the page has it once.
func withoutExitStatus(desc string) string {
	return strings.TrimSpace(strings.Replace(desc, exitStatusHelp, "", 1))
}

// roffFlag writes one option as a tagged paragraph: its names, its value's
// placeholder and its usage with the default.
func roffFlag(b *strings.Builder, f cli.Flag) {
	var names []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			names = append(names, `\fB\-`+roffText(n)+`\fR`)
		} else {
			names = append(names, `\fB\-\-`+roffText(n)+`\fR`)
		}
	}
	tag := strings.Join(names, ", ")
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		fmt.Fprintf(b, ".TP\n%s\n", tag)
		return
	}
	placeholder, usage := unquoteUsage(df.GetUsage())
	if df.TakesValue() {
		if placeholder == "" {
			placeholder = "value"
		}
		tag += ` \fI` + roffText(placeholder) + `\fR`
		def := df.GetDefaultText()
		if def == "" {
			def = df.GetValue()
		}
		if def != "" && def != `""` && !strings.Contains(usage, "(default") {
			usage += " (default: " + def + ")"
		}
	}
	fmt.Fprintf(b, ".TP\n%s\n%s\n", tag, roffText(usage))
}

// roffBlock writes text as paragraphs: runs of unindented lines are filled
// by the formatter, runs of indented lines are printed as they are.
func roffBlock(b *strings.Builder, text string) {
	if strings.TrimSpace(text) == "" {
		return
	}
	inCode := false
	b.WriteString(".PP\n")
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		code := strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")
		switch {
		case strings.TrimSpace(l) == "":
			if inCode {
				b.WriteString(".fi\n.RE\n")
				inCode = false
			}
			b.WriteString(".PP\n")
			continue
		case code && !inCode:
			b.WriteString(".RS 4\n.nf\n")
			inCode = true
		case !code && inCode:
			b.WriteString(".fi\n.RE\n")
			inCode = false
		}
		if code {
			l = strings.TrimPrefix(strings.TrimPrefix(l, "   "), "\t")
		}
		b.WriteString(roffText(l) + "\n")
	}
	if inCode {
		b.WriteString(".fi\n.RE\n")
	}
}

// roffGlyphs are the non-ASCII characters the help uses, as the named glyphs
// every groff output device has (-Tascii included: a terminal in the C locale).
var roffGlyphs = map[rune]string{
	'…': "...", '→': `\(->`, '←': `\(<-`, '×': `\(mu`, '—': `\(em`, '–': `\(en`,
	'≤': `\(<=`, '≥': `\(>=`, '“': `\(lq`, '”': `\(rq`, '‘': `\(oq`, '’': `\(cq`,
}

// roffText escapes s for a roff text line: backslashes, hyphens (which roff
// may otherwise print as typographic dashes), a leading dot or apostrophe (which
// would start a request), and non-ASCII runes, as named glyphs or \[uXXXX].
func roffText(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case i == 0 && (r == '.' || r == '\''):
			b.WriteString(`\&` + string(r))
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r == '\t':
			b.WriteString("   ")
		case roffGlyphs[r] != "":
			b.WriteString(roffGlyphs[r])
		case r > 0x7e || r < 0x20:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unquoteUsage splits a flag's usage into the placeholder it names in
// backquotes ("the store `DIR`") and the usage without the quotes, as
// urfave/cli does for --help.
func unquoteUsage(usage string) (placeholder, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// subcommands are c's own subcommands, without the "help" urfave/cli adds to
// a command it runs (man runs inside an app whose running command has one).
func subcommands(c *cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, s := range c.Subcommands {
		if s.Name != "help" {
			out = append(out, s)
		}
	}
	return out
}
