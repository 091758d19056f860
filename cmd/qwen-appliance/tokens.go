package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

func init() {
	fileFlag := &cli.StringFlag{Name: "file", Usage: "token file (JSON, mode 0600; created when missing)", Required: true}
	register(&cli.Command{
		Name:  "tokens",
		Usage: "create, list and revoke the gateway's API tokens",
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create a token and print it once",
				UsageText: "qwen-appliance tokens create --file F --name N --role user|admin|auditor [--models M,...] [--expires 90d] [--rpm N] [--tpm N] [--roles hr,finance] [--clearance public|internal|secret]",
				Description: "Prints the new token on stdout exactly once; the file keeps only the SHA-256\n" +
					"digest of its secret. Clients send it as 'Authorization: Bearer TOKEN'.\n" +
					"--roles and --clearance say what the token may read in the knowledge base\n" +
					"(documents allowed to role:NAME at or below the clearance); without them it\n" +
					"reads only documents allowed to all, or to user:ID, at class public.",
				Flags: []cli.Flag{
					fileFlag,
					&cli.StringFlag{Name: "name", Usage: "who or what the token is for", Required: true},
					&cli.StringFlag{Name: "role", Usage: "user, admin or auditor (auditor may only list models)", Value: "user"},
					&cli.StringSliceFlag{Name: "models", Usage: "models the token may use (default: all)"},
					&cli.StringFlag{Name: "expires", Usage: "lifetime such as 90d, 12h (default: never)"},
					&cli.IntFlag{Name: "rpm", Usage: "requests per minute (0: unlimited)"},
					&cli.IntFlag{Name: "tpm", Usage: "prompt+completion tokens per minute (0: unlimited)"},
					&cli.StringSliceFlag{Name: "roles", Usage: "knowledge-base roles, such as hr,finance"},
					&cli.StringFlag{Name: "clearance", Usage: "knowledge-base clearance: public, internal or secret (default public)"},
					&cli.BoolFlag{Name: "json", Usage: "print the token and its entry as JSON"},
				},
				Action: tokensCreate,
			},
			{
				Name:        "list",
				Usage:       "list tokens (never their secrets)",
				Description: "Example:\n   qwen-appliance tokens list --file tokens.json --json",
				Flags:       []cli.Flag{fileFlag, &cli.BoolFlag{Name: "json", Usage: "JSON output"}, wideFlag},
				Action:      tokensList,
			},
			{
				Name:        "revoke",
				Usage:       "revoke a token by ID or name",
				UsageText:   "qwen-appliance tokens revoke --file F ID|NAME",
				Description: "A running 'serve' picks the change up within seconds (or at once on SIGHUP).",
				Flags:       []cli.Flag{fileFlag, &cli.BoolFlag{Name: "json", Usage: "JSON output"}},
				Action:      tokensRevoke,
			},
		},
	})
}

func tokensCreate(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("pass the name with --name", "unexpected argument %q", c.Args().First())
	}
	role, err := tokens.ParseRole(c.String("role"))
	if err != nil {
		return usagef("pass --role user, admin or auditor", "%v", err)
	}
	var expires time.Duration
	if e := c.String("expires"); e != "" {
		if expires, err = parseSpan(e); err != nil {
			return usagef("pass --expires like 90d or 12h", "%v", err)
		}
	}
	var models []string
	for _, m := range c.StringSlice("models") {
		for _, p := range strings.Split(m, ",") {
			if p = strings.TrimSpace(p); p != "" {
				models = append(models, p)
			}
		}
	}
	roles := splitList(c.StringSlice("roles"))
	var tok string
	var entry *tokens.Token
	var createErr error
	err = tokens.Update(c.String("file"), func(s *tokens.Store) error {
		tok, entry, createErr = s.Create(tokens.CreateOptions{Name: c.String("name"), Role: role, Models: models,
			Expires: expires, RPM: c.Int("rpm"), TPM: c.Int("tpm"), Roles: roles, Clearance: c.String("clearance")})
		return createErr
	})
	if createErr != nil {
		return usagef("check --name, --rpm, --tpm, --roles and --clearance", "%v", createErr)
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{"token": tok, "entry": entry})
	}
	fmt.Fprintln(c.App.Writer, tok)
	fmt.Fprintf(c.App.ErrWriter, "created token %s (%s, role %s); it is shown only this once\n", entry.ID, entry.Name, entry.Role)
	return nil
}

func tokensList(c *cli.Context) error {
	// Load treats a missing file as an empty store (for create); listing a
	// file that is not there is a mistaken path, not "no tokens".
	if _, err := os.Stat(c.String("file")); errors.Is(err, fs.ErrNotExist) {
		return withCode(exitError, fmt.Errorf("token file %s does not exist", c.String("file")),
			"pass --file with the installed token file (/etc/qwen-appliance/tokens.json), or create a first token with 'tokens create'")
	}
	s, err := tokens.Load(c.String("file"))
	if err != nil {
		return err
	}
	now := time.Now()
	if c.Bool("json") {
		type row struct {
			*tokens.Token
			State string `json:"state"`
		}
		rows := []row{}
		for _, t := range s.Tokens {
			rows = append(rows, row{t, t.State(now)})
		}
		return printJSON(c.App.Writer, rows)
	}
	var rows [][]string
	for _, t := range s.Tokens {
		models, exp := "*", "never"
		if len(t.Models) > 0 {
			models = strings.Join(t.Models, ",")
		}
		if t.Expires != nil {
			// The day fits the 100-column table; --wide and --json
			// give the time.
			exp = t.Expires.Format(time.DateOnly)
			if c.Bool("wide") {
				exp = t.Expires.Format(time.RFC3339)
			}
		}
		kbRoles, clearance := "-", "public"
		if len(t.Roles) > 0 {
			kbRoles = strings.Join(t.Roles, ",")
		}
		if t.Clearance != "" {
			clearance = t.Clearance
		}
		rows = append(rows, []string{t.ID, t.Name, string(t.Role), models, fmt.Sprint(t.RPM), fmt.Sprint(t.TPM), exp, string(t.State(now)), kbRoles + " " + clearance})
	}
	// The ID is what revoke takes: never cut.
	return writeTable(c, []string{"ID", "NAME", "ROLE", "MODELS", "RPM", "TPM", "EXPIRES", "STATE", "KB-ACCESS"}, rows, 0)
}

func tokensRevoke(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("name one token: tokens revoke --file F ID|NAME", "want one token ID or name, got %d arguments", c.NArg())
	}
	path := c.String("file")
	var t *tokens.Token
	var revokeErr error
	err := tokens.Update(path, func(s *tokens.Store) error {
		t, revokeErr = s.Revoke(c.Args().First(), time.Now())
		return revokeErr
	})
	if revokeErr != nil {
		return withCode(exitError, revokeErr, "see 'qwen-appliance tokens list --file "+path+"'")
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, t)
	}
	fmt.Fprintf(c.App.Writer, "revoked %s (%s)\n", t.ID, t.Name)
	return nil
}

// splitList flattens repeated and comma-separated flag values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
