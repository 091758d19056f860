package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/urfave/cli/v2"
)

func init() {
	register(&cli.Command{
		Name:  "status",
		Usage: "show what is installed, running and healthy",
		Description: `Reads the state record under ROOT/var/lib/qwen-appliance and checks that the
runtime and gateway processes run and that the gateway is ready (its model is
loaded). Exit status 1 when installed but not healthy.

Example:
   qwen-appliance status --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/", Usage: "install root"},
			&cli.BoolFlag{Name: "json", Usage: "print the status as JSON"},
		},
		Action: func(c *cli.Context) error {
			s, err := provision.GetStatus(c.String("root"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(c.App.Writer, s); err != nil {
					return err
				}
			} else if !s.Installed {
				fmt.Fprintln(c.App.Writer, "nothing installed")
			} else if err := printStatus(c.App.Writer, s); err != nil {
				return err
			}
			if s.Installed && !s.Healthy {
				return reportedError(exitError, fmt.Errorf("installed but not healthy"), "see the service logs named above; re-run install to restart the services")
			}
			return nil
		},
	})
	register(&cli.Command{
		Name:  "uninstall",
		Usage: "remove the services, firewall table, store, configuration and service users",
		Description: `Stops the runtime and gateway, deletes only our nftables table and its boot
unit, removes the model store (with --crypto-erase its key material is destroyed
first, so the data is unrecoverable even from a disk image), configuration,
logs, the program copy in /usr/lib/qwen-appliance, the manual page
/usr/share/man/man1/qwen-appliance.1, the service users
qwen-appliance made (qwen-appliance, qwen-runtime) with
their groups, and the state record.

Example:
   qwen-appliance uninstall --crypto-erase`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/", Usage: "install root"},
			&cli.BoolFlag{Name: "crypto-erase", Usage: "destroy the store's keys before removing it"},
			jsonOutput,
		},
		Action: func(c *cli.Context) error {
			err := provision.Uninstall(c.Context, provision.UninstallOptions{Root: c.String("root"), CryptoErase: c.Bool("crypto-erase"),
				Log: func(f string, a ...any) { fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: uninstall: "+f+"\n", a...) }})
			if errors.Is(err, provision.ErrBusy) {
				return withCode(exitError, err, busyHint)
			}
			if err != nil {
				return withCode(exitError, err, "fix what is named and run uninstall again; it carries on past what is already gone")
			}
			return report(c, map[string]any{"uninstalled": true, "root": c.String("root"), "cryptoErase": c.Bool("crypto-erase")}, "uninstalled\n")
		},
	})
}

// printStatus writes an installation's status in lines no wider than
// texttable.Width: each service on a line of its own with its unit and log
// on indented lines below, and the store's path moved below its line when
// it does not fit there. A path too long even so keeps its end (the file's
// name) and starts with "…"; --json has it whole.
func printStatus(w io.Writer, s *provision.Status) error {
	const indent = "    "
	var lines []string
	add := func(l ...string) {
		for _, x := range l {
			lines = append(lines, texttable.Truncate(x, texttable.Width))
		}
	}
	path := func(label, p string) string {
		return indent + label + texttable.TruncateStart(p, texttable.Width-texttable.StringWidth(indent+label))
	}
	add(fmt.Sprintf("%s version %d, installed %s", s.Bundle, s.Version, s.Updated.Format("2006-01-02 15:04:05Z07:00")),
		fmt.Sprintf("gateway %s ready=%v", s.Gateway, s.Ready))
	if store := fmt.Sprintf("store %s (%s)", s.Store, s.Backend); texttable.StringWidth(store) <= texttable.Width {
		add(store)
	} else {
		add(fmt.Sprintf("store (%s)", s.Backend), path("", s.Store))
	}
	if s.Previous != "" {
		add(fmt.Sprintf("previous %s (qwen-appliance rollback serves it again)", s.Previous))
	}
	for _, svc := range s.Services {
		add(fmt.Sprintf("%-8s pid %-7d running=%-5v %s", svc.Name, svc.PID, svc.Running, strings.Join(svc.Listen, ",")))
		if svc.Unit != "" {
			add(path("unit ", filepath.Base(svc.Unit)))
		}
		if svc.Log != "" {
			add(path("log ", svc.Log))
		}
	}
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}
