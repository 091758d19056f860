package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnPoolReuseAndRetry checks that connections are reused after a body
// is read to the end, dropped otherwise, and that a request on a connection
// the server closed while idle is retried once on a new one.
func TestConnPoolReuseAndRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		IdleTimeout: 200 * time.Millisecond,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var d net.Dialer
	p := &connPool{maxIdle: 4, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", ln.Addr().String()) }}
	get := func(readAll bool) {
		t.Helper()
		req := &upRequest{method: "GET", path: "/", host: ln.Addr().String(), requestID: "req_test", accept: "text/plain"}
		resp, err := p.do(context.Background(), req, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if readAll {
			if b, _ := io.ReadAll(resp.Body); string(b) != "hello" {
				t.Fatalf("body %q", b)
			}
		}
		resp.Body.Close()
	}
	for range 3 {
		get(true)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("3 sequential requests used %d connections, want 1", n)
	}
	get(false) // body left unread: the connection is dropped
	get(true)
	if n := conns.Load(); n != 2 {
		t.Fatalf("after an unread body: %d connections, want 2", n)
	}
	time.Sleep(400 * time.Millisecond) // the server closes the idle connection
	get(true)                          // fails on the stale connection, retried on a new one
	if n := conns.Load(); n != 3 {
		t.Fatalf("after the server closed the idle connection: %d connections, want 3", n)
	}
}
