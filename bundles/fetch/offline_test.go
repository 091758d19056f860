package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
)

// dialing returns an HTTP client whose every connection fails with err, so
// that the offline cases need no network at all.
func dialing(err error) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, err },
	}}
}

// TestOfflineFailsFast: a name that does not resolve, or a network with no
// route, ends a hub request and a download at the first attempt with
// ErrOffline, where a refused connection is retried (and each retry noted).
func TestOfflineFailsFast(t *testing.T) {
	dns := &net.DNSError{Err: "no such host", Name: "huggingface.co", IsNotFound: true}
	unreach := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name    string
		err     error
		offline bool
	}{{"dns", dns, true}, {"no route", unreach, true}, {"refused", refused, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var notes bytes.Buffer
			c := &Client{HTTP: dialing(tc.err), Retries: 2, Backoff: time.Millisecond, Progress: progress.New(&notes, progress.JSON, "fetch")}
			h := &Hub{Endpoint: "https://hub.example", Client: c}
			_, err := h.Resolve(t.Context(), "Org/Model", "main")
			if errors.Is(err, ErrOffline) != tc.offline {
				t.Fatalf("Resolve: %v; offline %v, want %v", err, errors.Is(err, ErrOffline), tc.offline)
			}
			_, derr := c.Download(t.Context(), Want{Name: "model/a.bin", URL: "https://hub.example/a.bin", Size: -1}, filepath.Join(t.TempDir(), "part"))
			if errors.Is(derr, ErrOffline) != tc.offline {
				t.Fatalf("Download: %v; offline %v, want %v", derr, errors.Is(derr, ErrOffline), tc.offline)
			}
			retries := strings.Count(notes.String(), "retry ")
			if tc.offline && retries != 0 {
				t.Errorf("offline, yet retried:\n%s", notes.String())
			}
			if !tc.offline && retries != 4 { // 2 for the hub, 2 for the download
				t.Errorf("want 4 retries noted, got %d:\n%s", retries, notes.String())
			}
		})
	}
}

// TestOfflineNoWait: with the default backoff (which adds up to 61 s over
// six retries), an offline hub request still returns at once.
func TestOfflineNoWait(t *testing.T) {
	h := &Hub{Endpoint: "https://hub.example", Client: &Client{HTTP: dialing(&net.DNSError{Err: "server misbehaving", Name: "hub.example"})}}
	start := time.Now()
	if _, err := h.Resolve(t.Context(), "Org/Model", "main"); !errors.Is(err, ErrOffline) {
		t.Fatalf("Resolve: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("took %s", d)
	}
}

// TestRetriesShownOnTerminal: on a terminal each retry of a hub request is
// printed as it happens, with the attempt and the wait.
func TestRetriesShownOnTerminal(t *testing.T) {
	var term bytes.Buffer
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	c := &Client{HTTP: dialing(refused), Retries: 2, Backoff: time.Millisecond, Progress: progress.New(&term, progress.Terminal, "fetch")}
	if _, err := (&Hub{Endpoint: "https://hub.example", Client: c}).Resolve(t.Context(), "Org/Model", "main"); err == nil || errors.Is(err, ErrOffline) {
		t.Fatalf("Resolve: %v", err)
	}
	for _, want := range []string{"connection refused; retry 1 of 2 in 1ms", "retry 2 of 2 in 2ms"} {
		if !strings.Contains(term.String(), want) {
			t.Errorf("terminal output lacks %q:\n%s", want, term.String())
		}
	}
}
