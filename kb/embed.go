package kb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Embedder computes dense vectors through the runtime's embedding API. The
// API is chosen by the URL's path: /api/embed is Ollama's; /v1/embeddings
// (or any path ending in /embeddings) is the OpenAI form vLLM and
// llama.cpp serve.
type Embedder struct {
	URL    string
	Model  string
	Client *http.Client // nil: a client with a 2-minute timeout
}

// Limits on what an embedding server may send back.
const (
	maxEmbedResponse = 64 << 20
	maxEmbedDim      = 16384
)

// ErrEmbed is returned (wrapped) when the embedding server fails or answers
// something that is not a set of vectors for the texts sent.
var ErrEmbed = errors.New("embedding failed")

// ollamaAPI reports whether u is Ollama's native endpoint, and checks that
// it is one of the two forms.
func (e *Embedder) ollamaAPI() (bool, error) {
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false, fmt.Errorf("embedding URL %q: want http(s)://HOST/api/embed or http(s)://HOST/v1/embeddings", e.URL)
	}
	switch {
	case strings.HasSuffix(u.Path, "/api/embed"):
		return true, nil
	case strings.HasSuffix(u.Path, "/embeddings"):
		return false, nil
	}
	return false, fmt.Errorf("embedding URL %q: the path must end in /api/embed (Ollama) or /v1/embeddings (vLLM, llama.cpp)", e.URL)
}

// Embed returns one L2-normalised vector per text, in order. Errors wrap
// ErrEmbed, and name the server's status and the start of its answer.
func (e *Embedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if e.Model == "" {
		return nil, errors.New("embed: no model named")
	}
	ollama, err := e.ollamaAPI()
	if err != nil {
		return nil, err
	}
	if len(texts) == 0 {
		return nil, nil
	}
	body, _ := json.Marshal(map[string]any{"model": e.Model, "input": texts})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEmbed, err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := e.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Minute}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEmbed, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEmbedResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read the answer: %v", ErrEmbed, err)
	}
	if len(data) > maxEmbedResponse {
		return nil, fmt.Errorf("%w: answer over %d bytes", ErrEmbed, maxEmbedResponse)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s from %s: %s", ErrEmbed, resp.Status, e.URL, snippet(data))
	}
	var vecs [][]float32
	if ollama {
		var r struct {
			Embeddings [][]float32 `json:"embeddings"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("%w: not an /api/embed answer: %v", ErrEmbed, err)
		}
		vecs = r.Embeddings
	} else {
		var r struct {
			Data []struct {
				Index     int       `json:"index"`
				Embedding []float32 `json:"embedding"`
			} `json:"data"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("%w: not a /v1/embeddings answer: %v", ErrEmbed, err)
		}
		vecs = make([][]float32, len(r.Data))
		for _, d := range r.Data {
			if d.Index < 0 || d.Index >= len(vecs) || vecs[d.Index] != nil {
				return nil, fmt.Errorf("%w: bad or repeated index %d", ErrEmbed, d.Index)
			}
			vecs[d.Index] = d.Embedding
		}
	}
	if len(vecs) != len(texts) {
		return nil, fmt.Errorf("%w: %d vectors for %d texts", ErrEmbed, len(vecs), len(texts))
	}
	for i, v := range vecs {
		if len(v) == 0 || len(v) > maxEmbedDim || len(v) != len(vecs[0]) {
			return nil, fmt.Errorf("%w: vector %d has %d dimensions (first: %d, limit %d)", ErrEmbed, i, len(v), len(vecs[0]), maxEmbedDim)
		}
		if !normalize(v) {
			return nil, fmt.Errorf("%w: vector %d is zero or not finite", ErrEmbed, i)
		}
	}
	return vecs, nil
}

// normalize scales v to unit length, so a dot product is the cosine; it
// reports false for a zero vector or one with NaN or infinite values.
func normalize(v []float32) bool {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	if s == 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return false
	}
	n := float32(1 / math.Sqrt(s))
	for i := range v {
		v[i] *= n
	}
	return true
}

func snippet(b []byte) string {
	s := strings.ToValidUTF8(string(b[:min(len(b), 200)]), "?")
	return strings.Join(strings.Fields(s), " ")
}
