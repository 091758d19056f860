// Command loadgen is the gateway benchmark's load generator. In rate mode it
// sends requests open-loop at a fixed rate (latency is measured from when
// each request was due, so a stalled server cannot hide its queue) and
// prints p50/p99; in stream mode it holds N streamed completions open and
// reports streamed tokens (SSE data events) per second.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "full URL to request")
	token := flag.String("token", "", "bearer token (empty: none)")
	rate := flag.Int("rate", 1000, "requests per second (rate mode)")
	dur := flag.Duration("duration", 5*time.Second, "how long to send")
	body := flag.String("body", "", "POST this JSON body (empty: GET)")
	streams := flag.Int("streams", 0, "stream mode: this many concurrent streamed requests")
	flag.Parse()
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024, IdleConnTimeout: time.Minute,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback benchmark against a self-made CA
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	newReq := func() *http.Request {
		method, rd := http.MethodGet, io.Reader(nil)
		if *body != "" {
			method, rd = http.MethodPost, strings.NewReader(*body)
		}
		req, err := http.NewRequest(method, *url, rd)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if *token != "" {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		if *body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		return req
	}
	var res map[string]any
	if *streams > 0 {
		res = streamMode(client, newReq, *streams, *dur)
	} else {
		res = rateMode(client, newReq, *rate, *dur)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func rateMode(client *http.Client, newReq func() *http.Request, rate int, dur time.Duration) map[string]any {
	// Warm the connection pool so the first second is not all handshakes.
	for range 16 {
		if resp, err := client.Do(newReq()); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	n := int(dur.Seconds() * float64(rate))
	lat := make([]time.Duration, n)
	var errs atomic.Int64
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Do(newReq())
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				errs.Add(1)
			}
			lat[i] = time.Since(due)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	return map[string]any{"requests": n, "errors": errs.Load(), "rate": float64(n) / elapsed.Seconds(),
		"p50ms": ms(0.50), "p99ms": ms(0.99), "maxms": ms(1)}
}

func streamMode(client *http.Client, newReq func() *http.Request, streams int, dur time.Duration) map[string]any {
	var events, errs atomic.Int64
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := client.Do(newReq())
				if err != nil || resp.StatusCode != 200 {
					errs.Add(1)
					if err == nil {
						resp.Body.Close()
					}
					continue
				}
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if line := sc.Bytes(); bytes.HasPrefix(line, []byte("data: {")) {
						events.Add(1)
					}
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	return map[string]any{"streams": streams, "errors": errs.Load(), "tokensPerSec": float64(events.Load()) / el}
}
