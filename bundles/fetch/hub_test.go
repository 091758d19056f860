package fetch

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeHub impersonates the Hugging Face hub's revision API and resolve
// endpoint over loopback: advertised sizes, LFS SHA-256s and git blob IDs,
// Range requests, and switchable misbehaviour.
type fakeHub struct {
	t      *testing.T
	srv    *httptest.Server
	repo   string
	commit string
	files  map[string][]byte
	lfs    map[string]bool

	mu          sync.Mutex
	dropAfter   map[string]int64  // close the connection after this many body bytes (once)
	ignoreRange map[string]bool   // answer 200 with the whole file to range requests
	lie         map[string]string // advertise this sha256 instead of the real one
	status      map[string]int    // answer every request for the file with this status
	requests    []string          // "GET path range auth"
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, repo: "Org/Model", commit: strings.Repeat("ab", 20), files: map[string][]byte{}, lfs: map[string]bool{},
		dropAfter: map[string]int64{}, ignoreRange: map[string]bool{}, lie: map[string]string{}, status: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func (h *fakeHub) add(path string, data []byte, lfs bool) {
	h.files[path] = data
	h.lfs[path] = lfs
}

func sum256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func gitBlob(b []byte) string {
	s := sha1.New()
	fmt.Fprintf(s, "blob %d\x00", len(b))
	s.Write(b)
	return hex.EncodeToString(s.Sum(nil))
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.requests = append(h.requests, fmt.Sprintf("%s %s range=%q auth=%q", r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("Authorization")))
	h.mu.Unlock()
	apiPrefix := "/api/models/" + h.repo + "/revision/"
	if rev, ok := strings.CutPrefix(r.URL.Path, apiPrefix); ok {
		if rev != h.commit && rev != "main" {
			http.Error(w, "no such revision", http.StatusNotFound)
			return
		}
		type lfs struct {
			SHA256 string `json:"sha256"`
			Size   int64  `json:"size"`
		}
		type sib struct {
			RFilename string `json:"rfilename"`
			BlobID    string `json:"blobId"`
			Size      int64  `json:"size"`
			LFS       *lfs   `json:"lfs,omitempty"`
		}
		var sibs []sib
		for p, data := range h.files {
			s := sib{RFilename: p, Size: int64(len(data)), BlobID: gitBlob(data)}
			if h.lfs[p] {
				sum := sum256(data)
				if l, ok := h.lie[p]; ok {
					sum = l
				}
				s.LFS = &lfs{SHA256: sum, Size: int64(len(data))}
				s.BlobID = strings.Repeat("0", 40) // the pointer file's blob, not the content's
			}
			sibs = append(sibs, s)
		}
		json.NewEncoder(w).Encode(map[string]any{"id": h.repo, "sha": h.commit, "siblings": sibs})
		return
	}
	resolvePrefix := "/" + h.repo + "/resolve/" + h.commit + "/"
	p, ok := strings.CutPrefix(r.URL.Path, resolvePrefix)
	data, exists := h.files[p]
	if !ok || !exists {
		http.NotFound(w, r)
		return
	}
	h.mu.Lock()
	status, drop, ignore := h.status[p], h.dropAfter[p], h.ignoreRange[p]
	delete(h.dropAfter, p)
	h.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	var start int64
	if rg := r.Header.Get("Range"); rg != "" && !ignore {
		v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
		if err != nil || v > int64(len(data)) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = v
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)-int(start)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
	}
	body := data[start:]
	if drop > 0 && drop < int64(len(body)) {
		w.Write(body[:drop])
		w.(http.Flusher).Flush()
		// Hijack and close: the client sees a connection that ends mid-file.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Write(body)
}
