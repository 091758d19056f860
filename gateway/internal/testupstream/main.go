// Command testupstream is a small OpenAI-compatible server that the gateway's
// integration tests start as a real process in front of which the gateway
// runs. Besides the API routes it serves admin routes (/metrics, /slots,
// /health, /debug/...) that leak what a real runtime's do, so the tests can
// show they are unreachable through the gateway. It must never be shipped.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type state struct {
	mu        sync.Mutex
	last      http.Header
	lastBody  map[string]any
	lastRaw   string // the body's bytes as received
	requests  atomic.Int64
	cancelled atomic.Int64
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address")
	unix := flag.String("unix", "", "Unix socket path (instead of -listen)")
	flag.Parse()
	var ln net.Listener
	var err error
	if *unix != "" {
		ln, err = net.Listen("unix", *unix)
	} else {
		ln, err = net.Listen("tcp", *listen)
	}
	if err != nil {
		log.Fatal(err)
	}
	// The test reads this line to learn the address.
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	s := &state{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, nil)
		writeJSON(w, map[string]any{"object": "list", "data": []map[string]any{
			{"id": "qwen", "object": "model", "owned_by": "test"},
			{"id": "other", "object": "model", "owned_by": "test"},
		}})
	})
	mux.HandleFunc("POST /v1/chat/completions", s.completion(true))
	mux.HandleFunc("POST /v1/completions", s.completion(false))
	mux.HandleFunc("POST /v1/embeddings", func(w http.ResponseWriter, r *http.Request) {
		body := s.record(r, r)
		writeJSON(w, map[string]any{"object": "list", "model": body["model"],
			"data":  []map[string]any{{"object": "embedding", "index": 0, "embedding": []float64{0.1, 0.2, 0.3}}},
			"usage": map[string]any{"prompt_tokens": 4, "total_tokens": 4}})
	})
	admin := func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "SECRET-ADMIN-DATA: other users' prompts live here")
	}
	for _, p := range []string{"/metrics", "/slots", "/health", "/props", "/", "/v1/internal"} {
		mux.HandleFunc(p, admin)
	}
	mux.HandleFunc("GET /debug/last", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		writeJSON(w, map[string]any{"headers": s.last, "body": s.lastBody, "raw": s.lastRaw,
			"requests": s.requests.Load(), "cancelled": s.cancelled.Load()})
	})
	log.Fatal(http.Serve(ln, mux))
}

func (s *state) record(r *http.Request, body *http.Request) map[string]any {
	s.requests.Add(1)
	var m map[string]any
	var raw []byte
	if body != nil {
		raw, _ = io.ReadAll(body.Body)
		_ = json.Unmarshal(raw, &m)
	}
	s.mu.Lock()
	s.last, s.lastBody, s.lastRaw = r.Header.Clone(), m, string(raw)
	s.mu.Unlock()
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// completion answers with max_tokens (default 5) words "tok0 tok1 ...". A
// request may set x_delay_ms to slow each streamed token, and x_fail to make
// the upstream answer 500 with internals the gateway must not pass on.
// x_answer replaces the words with its text, streamed two characters per
// chunk (so "[1]" is cut between chunks).
func (s *state) completion(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := s.record(r, r)
		if body["x_fail"] == true {
			http.Error(w, "Traceback (most recent call last): /opt/secret/path.py", 500)
			return
		}
		if body["x_reject"] == true {
			http.Error(w, "bad request at /opt/secret/path.py line 7", 400)
			return
		}
		if body["model"] == "missing" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			fmt.Fprint(w, `{"error":{"message":"model missing not found","type":"invalid_request_error","param":null,"code":"model_not_found"}}`)
			return
		}
		model, _ := body["model"].(string)
		n := 5
		if v, ok := body["max_tokens"].(float64); ok && v > 0 {
			n = int(v)
		}
		delay := time.Duration(0)
		if v, ok := body["x_delay_ms"].(float64); ok {
			delay = time.Duration(v) * time.Millisecond
		}
		usage := map[string]any{"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
		object := "text_completion"
		if chat {
			object = "chat.completion"
		}
		answer, fixed := body["x_answer"].(string)
		if stream, _ := body["stream"].(bool); !stream {
			var words []string
			for i := range n {
				words = append(words, fmt.Sprintf("tok%d", i))
			}
			text := strings.Join(words, " ")
			if fixed {
				text = answer
			}
			choice := map[string]any{"index": 0, "finish_reason": "length", "text": text}
			if chat {
				choice = map[string]any{"index": 0, "finish_reason": "length", "message": map[string]any{"role": "assistant", "content": text}}
			}
			writeJSON(w, map[string]any{"id": "cmpl-1", "object": object, "created": time.Now().Unix(), "model": model, "choices": []any{choice}, "usage": usage})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fl := w.(http.Flusher)
		send := func(v any) bool {
			b, _ := json.Marshal(v)
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return false
			}
			fl.Flush()
			return true
		}
		var pieces []string
		for i := range n {
			pieces = append(pieces, fmt.Sprintf("tok%d ", i))
		}
		if fixed {
			pieces = nil
			for r := []rune(answer); len(r) > 0; {
				k := min(2, len(r))
				pieces, r = append(pieces, string(r[:k])), r[k:]
			}
		}
		for _, text := range pieces {
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					s.cancelled.Add(1)
					return
				}
			}
			choice := map[string]any{"index": 0, "text": text, "finish_reason": nil}
			if chat {
				choice = map[string]any{"index": 0, "delta": map[string]any{"content": text}, "finish_reason": nil}
			}
			if !send(map[string]any{"id": "cmpl-1", "object": object + ".chunk", "created": time.Now().Unix(), "model": model, "choices": []any{choice}}) {
				s.cancelled.Add(1)
				return
			}
		}
		if so, _ := body["stream_options"].(map[string]any); so["include_usage"] == true {
			send(map[string]any{"id": "cmpl-1", "object": object + ".chunk", "created": time.Now().Unix(), "model": model, "choices": []any{}, "usage": usage})
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		fl.Flush()
	}
}
