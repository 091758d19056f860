package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func testClient() *Client {
	return &Client{Backoff: time.Millisecond, Retries: 3, ChunkSize: 64 << 10}
}

func TestHubResolveAndDownload(t *testing.T) {
	h := newFakeHub(t)
	weights := randomBytes(3<<20+123, 1)
	config := []byte(`{"model_type":"qwen2"}`)
	h.add("model-00001.safetensors", weights, true)
	h.add("config.json", config, false)
	hub := &Hub{Endpoint: h.srv.URL, Token: "secret", Client: testClient()}
	ctx := context.Background()
	r, err := hub.Resolve(ctx, h.repo, h.commit)
	if err != nil {
		t.Fatal(err)
	}
	if r.Commit != h.commit || len(r.Files) != 2 {
		t.Fatalf("resolve: %+v", r)
	}
	dir := t.TempDir()
	for _, f := range r.Files {
		w := hub.Want(r, f, "model/"+f.Path, "")
		d, err := hub.Client.Download(ctx, w, filepath.Join(dir, f.Path))
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		want := h.files[f.Path]
		got, _ := os.ReadFile(filepath.Join(dir, f.Path))
		if !bytes.Equal(got, want) || d.SHA256 != sum256(want) || d.Size != int64(len(want)) {
			t.Fatalf("%s: wrong bytes or digest", f.Path)
		}
		// The chunk hashes are what manifests.HashFile computes.
		_, chunks, _ := manifests.HashFile(ctx, bytes.NewReader(want), int64(len(want)), 64<<10, nil)
		if strings.Join(chunks, ",") != strings.Join(d.Chunks, ",") {
			t.Fatalf("%s: chunk hashes differ from manifests.HashFile", f.Path)
		}
		if f.BlobID != "" && d.GitSHA1 != f.BlobID {
			t.Fatalf("%s: git blob id %s, want %s", f.Path, d.GitSHA1, f.BlobID)
		}
	}
	for _, req := range h.requests {
		if !strings.Contains(req, `auth="Bearer secret"`) {
			t.Errorf("request without the token: %s", req)
		}
	}
}

func TestDownloadResumesAfterDroppedConnection(t *testing.T) {
	h := newFakeHub(t)
	data := randomBytes(5<<20, 2)
	h.add("w.bin", data, true)
	h.dropAfter["w.bin"] = 2<<20 + 17
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, err := hub.Resolve(context.Background(), h.repo, h.commit)
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(t.TempDir(), "w.part")
	d, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "w.bin", ""), part)
	if err != nil {
		t.Fatal(err)
	}
	if d.SHA256 != sum256(data) {
		t.Fatal("wrong hash after resume")
	}
	var ranged bool
	for _, q := range h.requests {
		if strings.Contains(q, `range="bytes=`) {
			ranged = true
		}
	}
	if !ranged {
		t.Fatalf("no range request after the drop: %v", h.requests)
	}
}

func TestDownloadResumesPartialFileFromEarlierRun(t *testing.T) {
	h := newFakeHub(t)
	data := randomBytes(1<<20+5, 3)
	h.add("w.bin", data, true)
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	part := filepath.Join(t.TempDir(), "w.part")
	if err := os.WriteFile(part, data[:700000], 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "w.bin", ""), part)
	if err != nil {
		t.Fatal(err)
	}
	if d.SHA256 != sum256(data) {
		t.Fatal("wrong hash after resuming a partial file")
	}
	last := h.requests[len(h.requests)-1]
	if !strings.Contains(last, `range="bytes=700000-"`) {
		t.Fatalf("want a range request from 700000, got %s", last)
	}
}

func TestDownloadServerIgnoringRangeStartsOver(t *testing.T) {
	h := newFakeHub(t)
	data := randomBytes(1<<20, 4)
	h.add("w.bin", data, true)
	h.ignoreRange["w.bin"] = true
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	part := filepath.Join(t.TempDir(), "w.part")
	os.WriteFile(part, data[:1000], 0o644)
	d, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "w.bin", ""), part)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(part)
	if d.SHA256 != sum256(data) || !bytes.Equal(got, data) {
		t.Fatal("a 200 answer to a range request must restart the file and the hash")
	}
}

func TestDownloadWrongHashIsRejectedAndRemoved(t *testing.T) {
	h := newFakeHub(t)
	data := randomBytes(300000, 5)
	h.add("w.bin", data, true)
	h.lie["w.bin"] = strings.Repeat("0", 64)
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	part := filepath.Join(t.TempDir(), "w.part")
	_, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "model/w.bin", ""), part)
	var me *MismatchError
	if !errors.As(err, &me) || me.What != "sha256" || me.Name != "model/w.bin" {
		t.Fatalf("want a sha256 mismatch naming model/w.bin, got %v", err)
	}
	if !errors.Is(err, manifests.ErrVerification) {
		t.Fatal("a mismatch must match manifests.ErrVerification")
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Fatal("the wrong file was kept for resuming")
	}
}

func TestDownloadGitBlobMismatch(t *testing.T) {
	h := newFakeHub(t)
	h.add("config.json", []byte("{}"), false)
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	h.files["config.json"] = []byte("[]") // changed after the listing
	_, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "config.json", ""), filepath.Join(t.TempDir(), "c"))
	var me *MismatchError
	if !errors.As(err, &me) || me.What != "git blob id" {
		t.Fatalf("want a git blob id mismatch, got %v", err)
	}
}

func TestDownloadPermanentErrorsAreNotRetried(t *testing.T) {
	h := newFakeHub(t)
	h.add("w.bin", []byte("x"), true)
	h.status["w.bin"] = http.StatusUnauthorized
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	_, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "w.bin", ""), filepath.Join(t.TempDir(), "p"))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 401 || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Fatalf("want a 401 naming HF_TOKEN, got %v", err)
	}
	n := 0
	for _, q := range h.requests {
		if strings.Contains(q, "/resolve/") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("a 401 was retried: %d requests", n)
	}
}

func TestDownloadServerErrorsAreRetried(t *testing.T) {
	h := newFakeHub(t)
	h.add("w.bin", []byte("hello"), true)
	h.status["w.bin"] = http.StatusServiceUnavailable
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	r, _ := hub.Resolve(context.Background(), h.repo, h.commit)
	go func() {
		time.Sleep(20 * time.Millisecond)
		h.mu.Lock()
		delete(h.status, "w.bin")
		h.mu.Unlock()
	}()
	hub.Client.Retries = 20
	hub.Client.Backoff = 5 * time.Millisecond
	if _, err := hub.Client.Download(context.Background(), hub.Want(r, r.Files[0], "w.bin", ""), filepath.Join(t.TempDir(), "p")); err != nil {
		t.Fatal(err)
	}
}

func TestResolveRefusesHostileNames(t *testing.T) {
	h := newFakeHub(t)
	h.add("../../etc/passwd", []byte("x"), false)
	hub := &Hub{Endpoint: h.srv.URL, Client: testClient()}
	if _, err := hub.Resolve(context.Background(), h.repo, h.commit); err == nil || !strings.Contains(err.Error(), "..") {
		t.Fatalf("want a refusal of the '..' name, got %v", err)
	}
}

func TestTokenNotSentToOtherHosts(t *testing.T) {
	// The hub redirects LFS downloads to a CDN; the token must stay behind.
	cdnAuth := make(chan string, 1)
	cdn := newFakeHub(t)
	cdn.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnAuth <- r.Header.Get("Authorization")
		w.Write([]byte("data"))
	})
	hub := newFakeHub(t)
	hub.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, strings.Replace(cdn.srv.URL, "127.0.0.1", "localhost", 1)+"/blob", http.StatusFound)
	})
	c := testClient()
	_, err := c.Download(context.Background(), Want{Name: "x", URL: hub.srv.URL + "/x", Size: -1,
		Header: http.Header{"Authorization": {"Bearer secret"}}}, filepath.Join(t.TempDir(), "p"))
	if err != nil {
		t.Fatal(err)
	}
	if got := <-cdnAuth; got != "" {
		t.Fatalf("token forwarded to another host: %q", got)
	}
}

func TestFileURLCopyHashes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := randomBytes(200000, 9)
	os.WriteFile(src, data, 0o644)
	c := testClient()
	d, err := c.Download(context.Background(), Want{Name: "s", URL: "file://" + src, Size: -1, SHA256: sum256(data)}, filepath.Join(dir, "p"))
	if err != nil || d.SHA256 != sum256(data) {
		t.Fatalf("file copy: %v", err)
	}
	_, err = c.Download(context.Background(), Want{Name: "s", URL: "file://" + src, Size: -1, SHA256: strings.Repeat("1", 64)}, filepath.Join(dir, "p2"))
	if !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("want a mismatch, got %v", err)
	}
}
