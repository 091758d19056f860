package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	"github.com/rogpeppe/go-internal/testscript"
)

// hubs holds each script's counting hub (see cmdHubServer).
var hubs sync.Map // *testscript.TestScript → *atomic.Int32

// hubserver starts a loopback server that answers every request with an
// error and counts them, and points HF_ENDPOINT at it: a command that must
// not contact a hub leaves the count at zero (hubcount prints it).
func cmdHubServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: hubserver")
	}
	n := new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "this hub must not be asked", http.StatusTeapot)
	}))
	ts.Defer(srv.Close)
	hubs.Store(ts, n)
	ts.Setenv("HF_ENDPOINT", srv.URL)
}

// hubcount prints "N requests" that the script's hubserver received.
func cmdHubCount(ts *testscript.TestScript, neg bool, args []string) {
	v, ok := hubs.Load(ts)
	if neg || len(args) != 0 || !ok {
		ts.Fatalf("usage: hubcount (after hubserver)")
	}
	fmt.Fprintf(ts.Stdout(), "%d requests\n", v.(*atomic.Int32).Load())
}
