package bundles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// objectStore impersonates, on loopback, an S3-compatible endpoint (path
// style: /BUCKET/KEY, SigV4-signed) and the Google Cloud Storage emulator
// interface (STORAGE_EMULATOR_HOST), serving objects and recording what was
// asked.
type objectStore struct {
	objects map[string][]byte // "bucket/key"
	mu      sync.Mutex
	seen    []string
}

func (o *objectStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.seen = append(o.seen, r.Method+" "+r.URL.RequestURI()+" auth="+strings.SplitN(r.Header.Get("Authorization"), ",", 2)[0])
	o.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	// GCS JSON API media download: /download/storage/v1/b/BUCKET/o/OBJECT?alt=media
	// (and metadata at /storage/v1/b/BUCKET/o/OBJECT).
	case strings.Contains(path, "storage/v1/b/"):
		_, rest, _ := strings.Cut(path, "storage/v1/b/")
		bucket, obj, _ := strings.Cut(rest, "/o/")
		path = bucket + "/" + obj
		if r.URL.Query().Get("alt") != "media" {
			data, ok := o.objects[path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"bucket":%q,"name":%q,"size":"%d","generation":"1"}`, bucket, obj, len(data))
			return
		}
	}
	data, ok := o.objects[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("ETag", `"1"`)
	w.Header().Set("Last-Modified", "Thu, 26 Nov 2026 00:00:00 GMT")
	w.Header().Set("X-Goog-Generation", "1")
	w.Write(data)
}

// TestCreateS3AndGCSSources fetches model files through go-getter's s3 and
// gcs getters from local impersonations of both services: the S3 request is
// signed with the credentials in the URL, GCS is reached through its
// emulator variable, and each file is checked against its pin.
func TestCreateS3AndGCSSources(t *testing.T) {
	s3data := bytes.Repeat([]byte("s3 weights "), 20000)
	gcsdata := bytes.Repeat([]byte("gcs tokenizer "), 5000)
	store := &objectStore{objects: map[string][]byte{
		"models/qwen/w.bin":        s3data,
		"gbucket/qwen/tokenizer.j": gcsdata,
	}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	t.Setenv("STORAGE_EMULATOR_HOST", host)
	// No credentials or configuration of the test host's may leak in.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	s3url := fmt.Sprintf("s3::http://%s/models/qwen/w.bin?aws_access_key_id=AKTEST&aws_access_key_secret=SECRET&region=eu-west-1", host)
	gcsurl := "gcs::https://www.googleapis.com/storage/v1/gbucket/qwen/tokenizer.j"
	spec := func(s3pin string) string {
		return fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: x\n  sources:\n"+
			"    - url: %s\n      dest: model/w.bin\n      sha256: %s\n"+
			"    - url: %s\n      dest: model/tokenizer.json\n      sha256: %s\n", s3url, s3pin, gcsurl, hexSum(gcsdata))
	}
	dir := t.TempDir()
	res, err := Create(context.Background(), specFor(t, spec(hexSum(s3data))), CreateOptions{Out: filepath.Join(dir, "b"), Key: testKey(t)})
	if err != nil {
		t.Fatalf("create: %v\nrequests: %q", err, store.seen)
	}
	for dest, data := range map[string][]byte{"model/w.bin": s3data, "model/tokenizer.json": gcsdata} {
		if f, ok := res.Manifest.Lookup(dest); !ok || f.SHA256 != hexSum(data) || f.Size != int64(len(data)) {
			t.Errorf("%s: %+v", dest, f)
		}
	}
	var signed, gcs bool
	for _, s := range store.seen {
		signed = signed || strings.HasPrefix(s, "GET /models/qwen/w.bin") && strings.Contains(s, "auth=AWS4-HMAC-SHA256 Credential=AKTEST/")
		gcs = gcs || strings.Contains(s, "gbucket") && strings.Contains(s, "tokenizer.j")
	}
	if !signed || !gcs {
		t.Errorf("requests: %q; want a SigV4 GET of the S3 object with AKTEST and a read of the GCS object", store.seen)
	}

	// A wrong pin on the S3 object: refused, nothing signed.
	_, err = Create(context.Background(), specFor(t, spec(strings.Repeat("c", 64))), CreateOptions{Out: filepath.Join(dir, "b2"), Key: testKey(t)})
	if !errors.Is(err, manifests.ErrVerification) || !strings.Contains(err.Error(), "model/w.bin") {
		t.Fatalf("want a mismatch naming model/w.bin, got %v", err)
	}
	if _, err := (manifests.Verifier{}).Open(filepath.Join(dir, "b2")); err == nil {
		t.Error("a manifest was written for the refused bundle")
	}

	// A missing object: the error names the source.
	missing := strings.Replace(spec(hexSum(s3data)), "qwen/w.bin", "qwen/gone.bin", 1)
	_, err = Create(context.Background(), specFor(t, missing), CreateOptions{Out: filepath.Join(dir, "b3"), Key: testKey(t)})
	if err == nil || !strings.Contains(err.Error(), "gone.bin") {
		t.Fatalf("want an error naming the missing object, got %v", err)
	}
}
