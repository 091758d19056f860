package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkProxyModels measures authenticated, audited GET /v1/models
// requests through the gateway to the real test upstream process, from
// parallel clients; BenchmarkDirectModels is the same load without the
// gateway.
func BenchmarkProxyModels(b *testing.B) {
	h := newHarness(b, func(o *Options) { o.MaxConcurrent = 1024 })
	benchGet(b, h.url+"/v1/models", h.tok["user"])
}

func BenchmarkDirectModels(b *testing.B) {
	h := newHarness(b, nil)
	benchGet(b, h.direct+"/v1/models", "")
}

func benchGet(b *testing.B, url, token string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkProxyChat is BenchmarkProxyModels for a small non-streamed chat
// completion: the request body is parsed, checked and forwarded.
func BenchmarkProxyChat(b *testing.B) {
	h := newHarness(b, func(o *Options) { o.MaxConcurrent = 1024 })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(benchChatBody))
			req.Header.Set("Authorization", "Bearer "+h.tok["user"])
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// benchChatBody is a typical small chat request: a system prompt, a short
// exchange, sampling parameters.
const benchChatBody = `{"model":"qwen","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly."},` +
	`{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},` +
	`{"role":"user","content":"And of Italy? Give one word."}],"temperature":0.2,"top_p":0.9,"max_tokens":8,"stream":false}`

// BenchmarkParseRequest is the gateway's own work on that body.
func BenchmarkParseRequest(b *testing.B) {
	rt := routes["/v1/chat/completions"]
	data := []byte(benchChatBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, aerr := parseRequest(data, rt, 4096, 4); aerr != nil {
			b.Fatal(aerr)
		}
	}
}

// BenchmarkStreamTokens compares the tokens/s a client receives from a
// streamed answer of 200 tokens through /v1/chat/completions and through
// /v1/kb/chat/completions (retrieval, citation filter on every delta, the
// citations event), from 8 parallel clients. pace=0 has the test upstream
// send as fast as it can (the gateway's own cost per token); pace=10ms is
// about a 7B model's speed on one GPU.
func BenchmarkStreamTokens(b *testing.B) {
	for _, pace := range []int{0, 10} {
		for _, route := range []string{"/v1/chat/completions", "/v1/kb/chat/completions"} {
			b.Run(fmt.Sprintf("pace=%dms%s", pace, strings.ReplaceAll(route, "/", "_")), func(b *testing.B) {
				h := kbHarness(b, newKB(b, ""), func(o *Options) { o.MaxConcurrent = 1024 })
				body := fmt.Sprintf(`{"model":"qwen","messages":[{"role":"user","content":"年假有多少天？"}],"max_tokens":200,"stream":true,"x_delay_ms":%d}`, pace)
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
				var tokensSeen atomic.Int64
				b.ResetTimer()
				start := time.Now()
				b.SetParallelism(8 / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req, _ := http.NewRequest("POST", h.url+route, strings.NewReader(body))
						req.Header.Set("Authorization", "Bearer "+h.tok["hr"])
						resp, err := client.Do(req)
						if err != nil {
							b.Error(err)
							return
						}
						n := int64(0)
						sc := bufio.NewScanner(resp.Body)
						for sc.Scan() {
							if strings.Contains(sc.Text(), `"content":"tok`) {
								n++
							}
						}
						resp.Body.Close()
						if resp.StatusCode != 200 || n != 200 {
							b.Errorf("status %d, %d tokens", resp.StatusCode, n)
							return
						}
						tokensSeen.Add(n)
					}
				})
				b.ReportMetric(float64(tokensSeen.Load())/time.Since(start).Seconds(), "tokens/s")
			})
		}
	}
}
