package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

func init() {
	rootFlag := &cli.StringFlag{Name: "root", Usage: "write every file under this `PREFIX` instead of /"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print the result as JSON"}
	register(&cli.Command{
		Name:  "harden",
		Usage: "egress-deny with nftables, the service users and strict directories",
		Subcommands: []*cli.Command{{
			Name:  "apply",
			Usage: "apply the egress-deny firewall and keep it across reboots",
			UsageText: "qwen-appliance harden apply [--api-port N] [--allow-cidr CIDR]... [--admin-cidr CIDR]... [--ssh-port N]\n" +
				"   [--allow-egress PROTO:CIDR:PORT]... [--root PREFIX] [--dry-run] [--confirm-timeout DUR]",
			Description: "Replaces table inet " + harden.TableName + " (and no other) in one atomic batch: input, output and\n" +
				"forward drop everything except loopback, replies, IPv6 neighbour discovery, the API port from\n" +
				"--allow-cidr, SSH from --admin-cidr and new outbound flows to --allow-egress. Writes the rules file,\n" +
				"a boot unit ordered before network-pre.target and the ruleset's SHA-256. Acts on the network\n" +
				"namespace it runs in (ip netns exec NS qwen-appliance harden apply ...).\n\n" +
				"Over SSH from an address no --admin-cidr covers, --confirm-timeout is required: the firewall\n" +
				"is applied, and reverted unless 'harden confirm' runs from a new connection in time.",
			Flags: []cli.Flag{
				&cli.UintFlag{Name: "api-port", Value: harden.DefaultAPIPort, Usage: "the gateway's TCP port"},
				&cli.StringSliceFlag{Name: "allow-cidr", Usage: "client `CIDR` allowed to reach the API port (repeatable)"},
				&cli.StringSliceFlag{Name: "admin-cidr", Usage: "admin `CIDR` allowed to reach the SSH port (repeatable)"},
				&cli.UintFlag{Name: "ssh-port", Value: harden.DefaultSSHPort, Usage: "the SSH port opened to --admin-cidr"},
				&cli.StringSliceFlag{Name: "allow-egress", Usage: "allowed outbound `PROTO:CIDR:PORT`, e.g. udp:10.0.0.5/32:123 (repeatable)"},
				&cli.DurationFlag{Name: "confirm-timeout", Usage: "revert unless 'harden confirm' runs within `DUR` (e.g. 60s)"},
				&cli.BoolFlag{Name: "dry-run", Usage: "print the exact ruleset and unit, change nothing"},
				rootFlag, jsonFlag,
			},
			Action: hardenApply,
		}, {
			Name:      "status",
			Usage:     "show the live firewall against the intended one",
			UsageText: "qwen-appliance harden status [--root PREFIX] [--json]",
			Description: "Compares the live table inet " + harden.TableName + " with the policy last applied and the rules\n" +
				"file with its recorded SHA-256. Exit status 3 when they differ.",
			Flags:  []cli.Flag{rootFlag, jsonFlag},
			Action: hardenStatus,
		}, {
			Name:      "confirm",
			Usage:     "keep a firewall that 'harden apply --confirm-timeout' is waiting on",
			UsageText: "qwen-appliance harden confirm [--root PREFIX]",
			Description: "Run it over a NEW connection: that it gets through is the proof that the new\n" +
				"firewall does not lock you out.",
			Flags:  []cli.Flag{rootFlag, jsonOutput},
			Action: hardenConfirm,
		}, {
			Name:      "remove",
			Usage:     "delete our table and the persisted rules, leaving every other table alone",
			UsageText: "qwen-appliance harden remove [--root PREFIX]",
			Flags:     []cli.Flag{rootFlag, jsonOutput},
			Action:    hardenRemove,
		}, {
			Name:      "identity",
			Usage:     "create the gateway's and the runtime's users and groups and the strict directories",
			UsageText: "qwen-appliance harden identity [--root PREFIX] [--json]",
			Description: "Creates the system users and groups " + harden.ServiceUser + " (the gateway: tokens, keys, audit\n" +
				"log) and " + harden.RuntimeUser + " (the inference server: no secrets), each with a group of its own,\n" +
				"no login shell and no home, with useradd (--prefix PREFIX under --root), and the\n" +
				"configuration, model, state and log directories with their owners and modes. Safe to\n" +
				"run again.",
			Flags:  []cli.Flag{rootFlag, jsonFlag},
			Action: hardenIdentity,
		}},
	})
}

func hardenRoot(c *cli.Context) (harden.Root, error) {
	r := c.String("root")
	if r == "" {
		return "", nil
	}
	abs, err := filepath.Abs(r)
	if err != nil {
		return "", usagef("check --root", "--root %q: %v", r, err)
	}
	return harden.Root(abs), nil
}

// hardenTarget resolves --root and opens the kernel's nftables in the
// current network namespace.
func hardenTarget(c *cli.Context) (harden.Root, *harden.Kernel, error) {
	root, err := hardenRoot(c)
	if err != nil {
		return "", nil, err
	}
	k, err := harden.Open()
	if err != nil {
		return "", nil, hardenErr(err)
	}
	return root, k, nil
}

func hardenPolicy(c *cli.Context) (harden.EgressPolicy, error) {
	p := harden.EgressPolicy{}
	for _, f := range []struct {
		name string
		dst  *uint16
	}{{"api-port", &p.APIPort}, {"ssh-port", &p.SSHPort}} {
		n := c.Uint(f.name)
		if n == 0 || n > 65535 {
			return p, usagef("pass --"+f.name+" from 1 to 65535", "--%s %d is not a port", f.name, n)
		}
		*f.dst = uint16(n)
	}
	cidrs := func(flag string) ([]netip.Prefix, error) {
		var out []netip.Prefix
		for _, s := range c.StringSlice(flag) {
			for _, part := range strings.Split(s, ",") {
				pf, err := harden.ParsePrefix(strings.TrimSpace(part))
				if err != nil {
					return nil, usagef("fix --"+flag, "--%s: %v", flag, err)
				}
				out = append(out, pf)
			}
		}
		return out, nil
	}
	var err error
	if p.ClientCIDRs, err = cidrs("allow-cidr"); err != nil {
		return p, err
	}
	if p.AdminCIDRs, err = cidrs("admin-cidr"); err != nil {
		return p, err
	}
	for _, s := range c.StringSlice("allow-egress") {
		r, err := harden.ParseEgress(s)
		if err != nil {
			return p, usagef("fix --allow-egress", "--allow-egress: %v", err)
		}
		p.Egress = append(p.Egress, r)
	}
	if err := p.Validate(); err != nil {
		return p, usagef("check the harden apply flags", "%v", err)
	}
	return p, nil
}

// hardenSession finds the operator's SSH session, through sudo too.
func hardenSession() (*harden.Session, error) {
	s, err := harden.FindSession(os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("anti-lockout: %w", err)
	}
	return s, nil
}

// hardenErr adds the hint for errors every harden subcommand can meet.
func hardenErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPERM):
		return withCode(exitError, err, "run as root (nftables needs CAP_NET_ADMIN)")
	case errors.Is(err, harden.ErrUnsupported):
		return withCode(exitHostUnfit, err, "run harden on the Linux host itself")
	case errors.Is(err, harden.ErrConcurrentChange):
		return withCode(exitError, err, "another tool is changing the firewall; run the command again")
	}
	return err
}

func hardenApply(c *cli.Context) error {
	root, err := hardenRoot(c)
	if err != nil {
		return err
	}
	p, err := hardenPolicy(c)
	if err != nil {
		return err
	}
	rs := harden.Build(p)
	if c.Bool("dry-run") {
		w := c.App.Writer
		if c.Bool("json") {
			return printJSON(w, map[string]any{"policy": p, "sha256": rs.Hash(),
				"rulesFile": root.Path(harden.RulesPath), "rules": rs.Text(),
				"unitFile": root.Path(filepath.Join(harden.UnitDir, harden.FirewallUnit)), "unit": harden.FirewallUnitText()})
		}
		fmt.Fprintf(w, "# %s (sha256 %s)\n%s\n", root.Path(harden.RulesPath), rs.Hash(), rs.Text())
		fmt.Fprintf(w, "# %s\n%s", root.Path(filepath.Join(harden.UnitDir, harden.FirewallUnit)), harden.FirewallUnitText())
		return nil
	}
	session, err := hardenSession()
	if err != nil {
		return err
	}
	k, err := harden.Open()
	if err != nil {
		return hardenErr(err)
	}
	if c.Duration("confirm-timeout") > 0 {
		// Losing the SSH connection is what the window guards against: the
		// hangup (and a pipe to a dead terminal) must not kill the revert.
		signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
		defer signal.Reset(syscall.SIGHUP, syscall.SIGPIPE)
	}
	log := c.App.ErrWriter
	res, err := harden.Apply(c.Context, k, harden.Options{
		Policy: p, Root: root, Session: session, ConfirmTimeout: c.Duration("confirm-timeout"), Log: log,
	})
	switch {
	case errors.Is(err, harden.ErrLockout):
		return withCode(exitUsage, err, fmt.Sprintf("add --admin-cidr covering %s, or pass --confirm-timeout 60s and run 'qwen-appliance harden confirm' from a new connection", session.Client))
	case errors.Is(err, harden.ErrNotConfirmed):
		return withCode(exitError, err, "if new connections did get through, apply again and run 'qwen-appliance harden confirm' sooner")
	case err != nil:
		return hardenErr(err)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	verb := "applied"
	if !res.Changed {
		verb = "already live"
	}
	fmt.Fprintf(c.App.Writer, "firewall %s: table inet %s, sha256 %s\nrules file: %s\nboot unit: %s\n",
		verb, harden.TableName, res.SHA256, res.RulesFile, res.UnitFile)
	return nil
}

func hardenStatus(c *cli.Context) error {
	root, k, err := hardenTarget(c)
	if err != nil {
		return err
	}
	st, err := harden.Check(k, root)
	if err != nil {
		return hardenErr(err)
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, st); err != nil {
			return err
		}
	} else {
		printHardenStatus(c.App.Writer, st)
	}
	if !st.OK() {
		return withCode(exitVerification, errors.New(strings.Join(st.Problems, "; ")),
			"run 'qwen-appliance harden apply' with the intended flags to restore it, or find who changed it")
	}
	return nil
}

func printHardenStatus(w io.Writer, st harden.Status) {
	if st.Applied {
		fmt.Fprintf(w, "applied: %s, sha256 %s\n", st.AppliedAt.Format("2006-01-02T15:04:05Z"), st.SHA256)
	} else {
		fmt.Fprintln(w, "applied: no (intended: no table of ours)")
	}
	live := "absent"
	if st.LiveTable {
		live = "present"
	}
	sync := "in sync"
	if !st.InSync {
		sync = "DIFFERS"
	}
	fmt.Fprintf(w, "live table inet %s: %s, %s\n", harden.TableName, live, sync)
	for _, d := range st.Diff {
		fmt.Fprintf(w, "  %s\n", d)
	}
	if st.Applied {
		state := "intact"
		if !st.FileIntact {
			state = "CHANGED OR MISSING"
		}
		fmt.Fprintf(w, "rules file %s: %s\n", st.RulesFile, state)
	}
}

func hardenConfirm(c *cli.Context) error {
	root, err := hardenRoot(c)
	if err != nil {
		return err
	}
	session, err := hardenSession()
	if err != nil {
		return err
	}
	switch err := harden.Confirm(root, session); {
	case errors.Is(err, harden.ErrNothingPending):
		return withCode(exitError, err, "confirm only while 'harden apply --confirm-timeout' waits (same --root)")
	case errors.Is(err, harden.ErrSameSession):
		return withCode(exitError, err, "open a new SSH connection and run 'qwen-appliance harden confirm' there")
	case err != nil:
		return err
	}
	return report(c, map[string]any{"confirmed": true}, "confirmed\n")
}

func hardenRemove(c *cli.Context) error {
	root, k, err := hardenTarget(c)
	if err != nil {
		return err
	}
	if err := harden.Remove(k, root); err != nil {
		return hardenErr(err)
	}
	return report(c, map[string]any{"removed": "inet " + harden.TableName},
		"removed table inet %s and its rules file and boot unit\n", harden.TableName)
}

func hardenIdentity(c *cli.Context) error {
	root, err := hardenRoot(c)
	if err != nil {
		return err
	}
	ids, err := harden.CreateIdentity(c.Context, root)
	if err != nil {
		return withCode(exitError, err, "check that useradd is installed and --root is writable")
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, ids)
	}
	for _, id := range []harden.Identity{ids.Gateway, ids.Runtime} {
		state := "exists"
		if id.Created {
			state = "created"
		}
		fmt.Fprintf(c.App.Writer, "user %s (uid %d, gid %d): %s\n", id.User, id.UID, id.GID, state)
	}
	for _, d := range ids.Dirs {
		fmt.Fprintf(c.App.Writer, "%04o %s:%s %s\n", d.Mode.Perm(), d.Owner, d.Group, root.Path(d.Path))
	}
	return nil
}
