package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// DefaultChunkSize is the chunk size of the digests, the manifest's own.
const DefaultChunkSize = manifests.DefaultChunkSize

// MismatchError says that fetched bytes differ from their pin. It matches
// manifests.ErrVerification.
type MismatchError struct {
	Name string // bundle path
	URL  string
	What string // "sha256", "size", "git blob id"
	Want string
	Got  string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s (from %s): %s is %s, expected %s", e.Name, e.URL, e.What, e.Got, e.Want)
}

// Is makes a MismatchError match manifests.ErrVerification.
func (e *MismatchError) Is(target error) bool { return target == manifests.ErrVerification }

// ErrOffline matches an error saying that this machine cannot reach a
// source at all: its host name does not resolve, or no route leads to it.
// Retrying will not help, so a download or hub request fails at once.
var ErrOffline = errors.New("cannot reach the source: no DNS answer or no route (is this machine offline?)")

// unreachable returns err marked with ErrOffline, as a permanent error, when
// it says the network cannot reach the source; other errors as they are.
func unreachable(err error) error {
	var dns *net.DNSError
	if errors.As(err, &dns) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) {
		return &permanentError{fmt.Errorf("%w: %w", ErrOffline, err)}
	}
	return err
}

// StatusError is a refusal by the server that retrying will not fix.
type StatusError struct {
	URL    string
	Status int
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		s += " (a gated or private repository needs HF_TOKEN)"
	}
	return s
}

// Client downloads files with resume, retries and hashing on the fly.
type Client struct {
	HTTP      *http.Client       // http.DefaultClient when nil
	Retries   int                // attempts without progress before giving up; 6 when 0
	Backoff   time.Duration      // first pause between attempts, doubled each time up to 30 s; 1 s when 0
	ChunkSize int64              // DefaultChunkSize when 0
	Progress  *progress.Reporter // may be nil
}

// Want describes one file to fetch.
type Want struct {
	Name    string      // label for progress and errors (the bundle path)
	URL     string      // http, https or file URL
	Header  http.Header // sent with every request to URL's host
	Size    int64       // expected size, -1 when unknown
	SHA256  string      // expected SHA-256, "" when unpinned
	GitBlob string      // expected git blob SHA-1, "" when none
}

func (c *Client) chunkSize() int64 {
	if c.ChunkSize > 0 {
		return c.ChunkSize
	}
	return DefaultChunkSize
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// delay is the attempt'th backoff: Backoff doubled attempt times, at most
// 30 seconds.
func (c *Client) delay(attempt int) time.Duration {
	d := c.Backoff
	if d <= 0 {
		d = time.Second
	}
	for range attempt {
		d *= 2
		if d > 30*time.Second {
			return 30 * time.Second
		}
	}
	return d
}

// sleep waits for the attempt'th backoff or until ctx ends.
func (c *Client) sleep(ctx context.Context, attempt int) error {
	t := time.NewTimer(c.delay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Download fetches w into the file part, resuming from what part already
// holds, and returns the digest of the complete file. A partial file from
// an earlier run is re-read once to restore the hash state; everything
// downloaded now is hashed as it arrives. A file whose size or hash differs
// from w's pins is removed and a *MismatchError returned.
func (c *Client) Download(ctx context.Context, w Want, part string) (Digest, error) {
	if strings.HasPrefix(w.URL, "file://") {
		return c.copyFile(ctx, w, part)
	}
	gitSize := int64(-1)
	if w.GitBlob != "" {
		gitSize = w.Size
	}
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	h := newHasher(c.chunkSize(), gitSize)
	off, err := c.restore(ctx, f, h, w)
	if err != nil {
		f.Close()
		h.finish()
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	if off > 0 {
		c.Progress.Note("resuming %s at byte %d", w.Name, off)
	}
	c.Progress.Start(w.Name, w.Size, off)
	off, h, err = c.transfer(ctx, f, h, w, off)
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	d := h.finish()
	if err == nil {
		err = check(w, d)
	}
	c.Progress.Done(w.Name, err)
	var me *MismatchError
	if errors.As(err, &me) {
		os.Remove(part) // a wrong file is not worth resuming
		return Digest{}, me
	}
	if err != nil {
		return Digest{}, fmt.Errorf("fetch %s: %w", w.Name, err)
	}
	return d, nil
}

// check compares a finished digest with the pins.
func check(w Want, d Digest) error {
	switch {
	case w.Size >= 0 && d.Size != w.Size:
		return &MismatchError{Name: w.Name, URL: w.URL, What: "size", Want: strconv.FormatInt(w.Size, 10), Got: strconv.FormatInt(d.Size, 10)}
	case w.SHA256 != "" && d.SHA256 != w.SHA256:
		return &MismatchError{Name: w.Name, URL: w.URL, What: "sha256", Want: w.SHA256, Got: d.SHA256}
	case w.GitBlob != "" && d.GitSHA1 != w.GitBlob:
		return &MismatchError{Name: w.Name, URL: w.URL, What: "git blob id", Want: w.GitBlob, Got: d.GitSHA1}
	}
	return nil
}

// restore feeds the bytes already in f to h and returns how many there are.
// A partial file longer than the expected size is started over.
func (c *Client) restore(ctx context.Context, f *os.File, h *hasher, w Want) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	n := st.Size()
	if w.Size >= 0 && n > w.Size {
		return 0, f.Truncate(0)
	}
	var off int64
	for off < n {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		b := h.get()
		m, err := f.ReadAt(b.buf[:min(int64(len(b.buf)), n-off)], off)
		b.n = m
		h.submit(b)
		off += int64(m)
		if err != nil && off < n {
			return 0, err
		}
	}
	return off, nil
}

// transfer downloads from off to the end, retrying with backoff. A server
// that ignores the range restarts the file (and the hash) from zero.
func (c *Client) transfer(ctx context.Context, f *os.File, h *hasher, w Want, off int64) (int64, *hasher, error) {
	failures := 0
	for {
		if w.Size >= 0 && off == w.Size && off > 0 {
			return off, h, nil
		}
		restart := func() error {
			c.Progress.Rewind(w.Name, off)
			h.finish()
			h = newHasher(c.chunkSize(), gitSizeOf(w))
			off = 0
			return f.Truncate(0)
		}
		got, done, err := c.attempt(ctx, f, &h, w, off, restart)
		if got > 0 {
			failures = 0
		}
		off += got
		if done {
			return off, h, nil
		}
		if ctx.Err() != nil {
			return off, h, ctx.Err()
		}
		var p *permanentError
		if errors.As(err, &p) {
			return off, h, p.err
		}
		if err == nil {
			continue
		}
		failures++
		if failures > c.retries() {
			return off, h, fmt.Errorf("giving up after %d attempts at byte %d: %w", failures, off, err)
		}
		c.Progress.Note("%s: %v; retry %d of %d from byte %d in %s", w.Name, err, failures, c.retries(), off, c.delay(failures-1))
		if err := c.sleep(ctx, failures-1); err != nil {
			return off, h, err
		}
	}
}

func gitSizeOf(w Want) int64 {
	if w.GitBlob != "" {
		return w.Size
	}
	return -1
}

func (c *Client) retries() int {
	if c.Retries > 0 {
		return c.Retries
	}
	return 6
}

// attempt makes one request from off. A server that sends the whole file
// instead of the range makes it call restart (file and hash from zero)
// before writing. It returns the bytes written, whether the file is complete,
// and the error that ended the attempt.
func (c *Client) attempt(ctx context.Context, f *os.File, hp **hasher, w Want, off int64, restart func() error) (got int64, done bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.URL, nil)
	if err != nil {
		return 0, false, &permanentError{err}
	}
	for k, v := range w.Header {
		req.Header[k] = v
	}
	// Ranges and hashes are over the stored bytes, never a re-encoding.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, false, unreachable(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != off {
			return 0, false, fmt.Errorf("server answered range %d- with %q", off, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			if err := restart(); err != nil {
				return 0, false, &permanentError{err}
			}
			off = 0
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off > 0:
		// The partial file is as long as the remote one (complete: "bytes
		// */LEN" with LEN = off; the hash then decides), or longer.
		if total, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes */"); ok && total == strconv.FormatInt(off, 10) {
			return 0, true, nil
		}
		if err := restart(); err != nil {
			return 0, false, err
		}
		return 0, false, errors.New("range not satisfiable; starting over")
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return 0, false, fmt.Errorf("server answered %s", resp.Status)
	default:
		return 0, false, &permanentError{&StatusError{URL: w.URL, Status: resp.StatusCode}}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, false, err
	}
	h := *hp
	flushed := off
	for {
		b := h.get()
		n, rerr := io.ReadFull(resp.Body, b.buf)
		if n > 0 {
			if w.Size >= 0 && off+got+int64(n) > w.Size {
				h.abandon(b)
				return got, false, &permanentError{&MismatchError{Name: w.Name, URL: w.URL, What: "size", Want: strconv.FormatInt(w.Size, 10), Got: "more than that"}}
			}
			if _, werr := f.Write(b.buf[:n]); werr != nil {
				h.abandon(b)
				return got, false, &permanentError{werr}
			}
			// Start writing to disk what arrived, so the fsync at the
			// end does not stall on the whole file.
			if end := off + got + int64(n); end-flushed >= writebackStep {
				atomicfile.StartWriteback(f, flushed, end-flushed)
				flushed = end
			}
			b.n = n
			h.submit(b)
			got += int64(n)
			c.Progress.Add(w.Name, int64(n))
		} else {
			h.abandon(b)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			if resp.ContentLength >= 0 && got < resp.ContentLength {
				return got, false, fmt.Errorf("connection ended after %d of %d bytes", got, resp.ContentLength)
			}
			return got, true, nil
		}
		if rerr != nil {
			return got, false, rerr
		}
	}
}

// writebackStep is how much of a download is written before the kernel is
// asked to start writing it to disk.
const writebackStep = 8 << 20

// permanentError ends a download without retrying.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, fmt.Errorf("bad Content-Range %q", v)
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("bad Content-Range %q", v)
	}
	return strconv.ParseInt(s, 10, 64)
}
