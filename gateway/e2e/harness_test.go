package e2e

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// writeTokens saves a token file at path with one token per option and
// returns their secrets, in order.
func writeTokens(t *testing.T, path string, opts ...tokens.CreateOptions) []string {
	t.Helper()
	store := &tokens.Store{}
	var secrets []string
	for _, o := range opts {
		secret, _, err := store.Create(o)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, secret)
	}
	if err := store.Save(path); err != nil {
		t.Fatal(err)
	}
	return secrets
}

// startGateway serves a gateway made from o on a loopback port and returns
// its address and stop, which shuts it down and closes it (flushing the
// audit log) and reports what went wrong. Stop runs once: at the test's
// end if the test did not call it first.
func startGateway(t *testing.T, o gateway.Options) (addr string, stop func() error) {
	t.Helper()
	g, err := gateway.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln, nil) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return errors.Join(<-done, g.Close())
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String(), stop
}
