package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Run opens the listeners, serves until ctx ends, reloading tokens and the
// TLS certificate on SIGHUP, and closes the audit log with a signed stop
// record. ready, when not nil, is called with the bound addresses.
func Run(ctx context.Context, o Options, ready func(api, metrics net.Addr)) (err error) {
	g, err := New(o)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, g.Close()) }()
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	var mln net.Listener
	if o.MetricsListen != "" {
		if mln, err = net.Listen("tcp", o.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("metrics listen on %s: %w", o.MetricsListen, err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := g.Reload(); err != nil {
					g.o.Log.Error("reload failed; the previous tokens and certificate stay in force", "err", err)
				} else {
					g.o.Log.Info("reloaded tokens and certificate")
				}
			}
		}
	}()
	if ready != nil {
		var maddr net.Addr
		if mln != nil {
			maddr = mln.Addr()
		}
		ready(ln.Addr(), maddr)
	}
	return g.Serve(ctx, ln, mln)
}
