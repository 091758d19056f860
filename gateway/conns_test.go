package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
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

// closingUpstream answers every request with 200 "ok" except the first to
// each path under /once/ and, with dropPOST, the first POST to any path:
// those it reads whole and then closes the connection without answering, the
// way an upstream that dies after receiving a completion request does. It
// counts the requests for each path.
func closingUpstream(t *testing.T, dropPOST ...bool) (addr string, count func(path string) int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					mu.Lock()
					seen[req.URL.Path]++
					first := seen[req.URL.Path] == 1
					mu.Unlock()
					if first && (strings.HasPrefix(req.URL.Path, "/once/") || len(dropPOST) > 0 && req.Method == "POST") {
						return // read it all, answer nothing
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return ln.Addr().String(), func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[path]
	}
}

// TestConnPoolNeverResendsPOST (issue 15): a POST on a reused connection
// that the upstream received and then dropped is not sent again, while a
// GET in the same situation is retried on a new connection.
func TestConnPoolNeverResendsPOST(t *testing.T) {
	addr, count := closingUpstream(t)
	var d net.Dialer
	p := &connPool{maxIdle: 4, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}
	send := func(method, path string, body []byte) error {
		req := &upRequest{method: method, path: path, host: addr, requestID: "req_test", accept: "text/plain", body: body}
		resp, err := p.do(context.Background(), req, time.Now().Add(5*time.Second))
		if err == nil {
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		return err
	}
	if err := send("GET", "/", nil); err != nil { // leaves a kept-alive connection
		t.Fatal(err)
	}
	if err := send("POST", "/once/chat", []byte(`{"model":"qwen"}`)); err == nil {
		t.Error("the upstream dropped the POST, yet do reported success")
	}
	if n := count("/once/chat"); n != 1 {
		t.Errorf("the upstream received the POST %d times, want exactly 1", n)
	}
	if err := send("GET", "/", nil); err != nil {
		t.Fatal(err)
	}
	if err := send("GET", "/once/models", nil); err != nil {
		t.Errorf("GET on a connection the upstream dropped was not retried: %v", err)
	}
	if n := count("/once/models"); n != 2 {
		t.Errorf("the upstream received the GET %d times, want 2 (retried once)", n)
	}
}

// failingConn is a connection whose writes fail before a byte is sent.
type failingConn struct{ net.Conn }

func (failingConn) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }
func (failingConn) Close() error              { return nil }

// TestConnPoolRetriesUnsentPOST: a POST none of whose bytes reached a reused
// connection is sent on a new one.
func TestConnPoolRetriesUnsentPOST(t *testing.T) {
	addr, count := closingUpstream(t)
	var d net.Dialer
	p := &connPool{maxIdle: 4, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}
	a, b := net.Pipe()
	defer b.Close()
	defer a.Close()
	uc := &upConn{c: failingConn{a}, br: bufio.NewReader(strings.NewReader(""))}
	uc.bw = bufio.NewWriter(countingConn{uc})
	p.put(uc)
	req := &upRequest{method: "POST", path: "/chat", host: addr, requestID: "req_test", accept: "text/plain", body: []byte(`{}`)}
	resp, err := p.do(context.Background(), req, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatalf("a POST that never left was not retried: %v", err)
	}
	resp.Body.Close()
	if n := count("/chat"); n != 1 {
		t.Errorf("upstream received %d, want 1", n)
	}
}

// TestGatewayNeverResendsCompletion: through the whole gateway, a completion
// request that the upstream received and then dropped reaches it exactly
// once, and the client gets a 502 it may choose to retry.
func TestGatewayNeverResendsCompletion(t *testing.T) {
	addr, count := closingUpstream(t, true)
	h := newHarness(t, func(o *Options) { o.Upstream = "http://" + addr })
	if code, _, body := h.do("GET", "/v1/models", h.tok["user"], nil); code != 200 { // a kept-alive connection
		t.Fatalf("models: %d %s", code, body)
	}
	code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil))
	if code != 502 {
		t.Errorf("dropped completion: %d %s", code, body)
	}
	if n := count("/v1/chat/completions"); n != 1 {
		t.Errorf("the upstream received the completion request %d times, want exactly 1", n)
	}
}
