package gateway

import (
	"io"
	"net/http"
	"testing"
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
