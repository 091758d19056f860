package kb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeEmbedServer serves both embedding APIs on loopback with a toy model:
// one dimension per concept, so "vacation" and "年假" are near and share
// no word. dims changes the vectors' length; fail makes it answer 500.
type fakeEmbedServer struct {
	*httptest.Server
	dims  atomic.Int32
	fail  atomic.Bool
	calls atomic.Int32
}

var concepts = [][]string{{"年假", "休假", "vacation", "leave"}, {"报销", "发票", "reimburse", "expense"}, {"食堂", "午餐", "canteen", "lunch"}}

func toyEmbed(text string, dims int) []float32 {
	v := make([]float32, dims)
	for i, words := range concepts {
		for _, w := range words {
			if strings.Contains(strings.ToLower(text), w) {
				v[i%dims] += 1
			}
		}
	}
	v[dims-1] += 0.1
	return v
}

func newFakeEmbedServer(t *testing.T) *fakeEmbedServer {
	f := &fakeEmbedServer{}
	f.dims.Store(8)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		var req struct {
			Model string   `json:"model"`
			Input []string `json:"input"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "toy" || f.fail.Load() {
			http.Error(w, `{"error":"model \"`+req.Model+`\" not found"}`, http.StatusInternalServerError)
			return
		}
		var vecs [][]float32
		for _, in := range req.Input {
			vecs = append(vecs, toyEmbed(in, int(f.dims.Load())))
		}
		switch r.URL.Path {
		case "/api/embed":
			json.NewEncoder(w).Encode(map[string]any{"model": req.Model, "embeddings": vecs})
		case "/v1/embeddings":
			var data []map[string]any
			for i := len(vecs) - 1; i >= 0; i-- { // out of order: index decides
				data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": vecs[i]})
			}
			json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func denseKB(t *testing.T, withSecret bool) *DB {
	k := openTest(t)
	put(t, k, "leave.txt", "员工每年享有十五天带薪年假。", Public, All)
	if withSecret {
		// Public class: only the access list keeps it from other callers.
		put(t, k, "exec.txt", "高管额外享有十天年假，CANARY-7f3a。", Public, "role:hr")
	}
	put(t, k, "canteen.txt", "食堂午餐十二点开始供应。", Public, All)
	put(t, k, "travel.txt", "出差住宿每晚不超过六百元。", Public, All)
	return k
}

func texts(hits []Hit) []string {
	var out []string
	for _, h := range hits {
		out = append(out, h.Text)
	}
	return out
}

func scoredTexts(hits []Hit) []string {
	var out []string
	for _, h := range hits {
		out = append(out, fmt.Sprintf("%.6f %s", h.Score, h.Text))
	}
	return out
}

func TestDenseSearch(t *testing.T) {
	srv := newFakeEmbedServer(t)
	ctx := context.Background()
	for _, api := range []string{"/api/embed", "/v1/embeddings"} {
		t.Run(api, func(t *testing.T) {
			e := &Embedder{URL: srv.URL + api, Model: "toy"}
			k := denseKB(t, true)
			n, err := k.EmbedChunks(ctx, e, nil)
			if err != nil || n != 4 {
				t.Fatalf("embedded %d: %v", n, err)
			}
			if n, err := k.EmbedChunks(ctx, e, nil); err != nil || n != 0 {
				t.Fatalf("second run embedded %d: %v", n, err)
			}
			// An English question shares no word with the Chinese answer:
			// lexical search finds nothing, dense search finds it.
			staff := Caller{}
			if hits := search(t, k, "vacation policy", staff); len(hits) != 0 {
				t.Fatalf("lexical found %q", texts(hits))
			}
			hits, err := k.Search(ctx, Query{Text: "vacation policy", Caller: staff, K: 10, Dense: e})
			if err != nil {
				t.Fatal(err)
			}
			if len(hits) == 0 || !strings.Contains(hits[0].Text, "十五天带薪年假") {
				t.Fatalf("dense: %q", texts(hits))
			}
			// The secret chunk is nearest to the question but not readable:
			// the results are exactly those of a knowledge base without it.
			k2 := denseKB(t, false)
			if _, err := k2.EmbedChunks(ctx, e, nil); err != nil {
				t.Fatal(err)
			}
			for _, kk := range []int{1, 10} {
				with, err := k.Search(ctx, Query{Text: "vacation policy", Caller: staff, K: kk, Dense: e})
				if err != nil {
					t.Fatal(err)
				}
				without, err := k2.Search(ctx, Query{Text: "vacation policy", Caller: staff, K: kk, Dense: e})
				if err != nil {
					t.Fatal(err)
				}
				if got, want := scoredTexts(with), scoredTexts(without); !slices.Equal(got, want) {
					t.Fatalf("k=%d with the secret document: %q\nwithout it: %q", kk, got, want)
				}
			}
			for _, h := range hits {
				if strings.Contains(h.Text, "CANARY") {
					t.Fatal("secret chunk returned")
				}
			}
			hr := Caller{Principals: []Principal{"role:hr"}, Clearance: Secret}
			hits, err = k.Search(ctx, Query{Text: "年假 vacation", Caller: hr, K: 2, Dense: e})
			if err != nil || len(hits) != 2 || !strings.Contains(strings.Join(texts(hits), ""), "CANARY") {
				t.Fatalf("hr: %q, %v", texts(hits), err)
			}
			// Both lists agree on the annual-leave chunks, so they lead.
			if hits[0].Score <= 1.0/float64(rrfK+2) {
				t.Errorf("fused score %v: want the sum of two ranks", hits[0].Score)
			}
		})
	}
}

func TestDenseReingest(t *testing.T) {
	srv := newFakeEmbedServer(t)
	ctx := context.Background()
	e := &Embedder{URL: srv.URL + "/api/embed", Model: "toy"}
	k := denseKB(t, false)
	if _, err := k.EmbedChunks(ctx, e, nil); err != nil {
		t.Fatal(err)
	}
	put(t, k, "leave.txt", "员工每年享有二十天带薪年假。", Public, All) // new version: new chunks
	var orphans int
	k.db.QueryRow(`SELECT count(*) FROM embeddings WHERE chunk NOT IN (SELECT id FROM chunks)`).Scan(&orphans)
	if orphans != 0 {
		t.Fatalf("%d vectors outlived their chunks", orphans)
	}
	if n, err := k.EmbedChunks(ctx, e, nil); err != nil || n != 1 {
		t.Fatalf("re-embedded %d: %v", n, err)
	}
}

func TestDenseErrors(t *testing.T) {
	srv := newFakeEmbedServer(t)
	ctx := context.Background()
	k := denseKB(t, false)
	good := &Embedder{URL: srv.URL + "/api/embed", Model: "toy"}
	q := func(e *Embedder) error {
		_, err := k.Search(ctx, Query{Text: "年假", Caller: Caller{}, Dense: e})
		return err
	}
	if err := q(good); err == nil || !strings.Contains(err.Error(), "no dense vectors stored") {
		t.Fatalf("before kb embed: %v", err)
	}
	for _, c := range []struct {
		name string
		e    *Embedder
		want string
	}{
		{"bad path", &Embedder{URL: srv.URL + "/api/generate", Model: "toy"}, "must end in /api/embed"},
		{"not http", &Embedder{URL: "file:///etc/passwd", Model: "toy"}, "want http(s)"},
		{"unknown model", &Embedder{URL: srv.URL + "/api/embed", Model: "nope"}, `500 Internal Server Error from`},
		{"nothing listening", &Embedder{URL: "http://127.0.0.1:1/api/embed", Model: "toy"}, "embedding failed"},
	} {
		if _, err := k.EmbedChunks(ctx, c.e, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := k.EmbedChunks(ctx, good, nil); err != nil {
		t.Fatal(err)
	}
	srv.dims.Store(4)
	if err := q(good); err == nil || !strings.Contains(err.Error(), "have 8 dimensions, the query's 4") {
		t.Fatalf("changed model: %v", err)
	}
	srv.fail.Store(true)
	if err := q(good); !errors.Is(err, ErrEmbed) {
		t.Fatalf("server down: %v", err)
	}
}

// FuzzEmbedAnswer: whatever an embedding server answers, Embed returns
// unit vectors of one length, one per text, or an error.
func FuzzEmbedAnswer(f *testing.F) {
	f.Add(`{"embeddings":[[1,0],[0,2]]}`, true)
	f.Add(`{"data":[{"index":1,"embedding":[1,0]},{"index":0,"embedding":[3,4]}]}`, false)
	f.Add(`{"data":[{"index":1,"embedding":[1]},{"index":1,"embedding":[1]}]}`, false)
	f.Add(`{"embeddings":[[0,0],[1e38,1e38]]}`, true)
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body.Load().(string))
	}))
	defer srv.Close()
	f.Fuzz(func(t *testing.T, answer string, ollama bool) {
		body.Store(answer)
		path := "/v1/embeddings"
		if ollama {
			path = "/api/embed"
		}
		vecs, err := (&Embedder{URL: srv.URL + path, Model: "m"}).Embed(context.Background(), []string{"a", "b"})
		if err != nil {
			return
		}
		if len(vecs) != 2 || len(vecs[0]) != len(vecs[1]) {
			t.Fatalf("%d vectors", len(vecs))
		}
		for _, v := range vecs {
			var s float64
			for _, x := range v {
				s += float64(x) * float64(x)
			}
			if s < 0.999 || s > 1.001 {
				t.Fatalf("norm² %v", s)
			}
		}
	})
}
