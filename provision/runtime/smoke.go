package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// SmokePrompt is the fixed prompt of the smoke test.
const SmokePrompt = "Reply with one word: are you ready?"

// smokeMaxTokens bounds the smoke test's answer; it needs tokens, not prose.
const smokeMaxTokens = 8

// SmokeResult is what a smoke test saw.
type SmokeResult struct {
	Model            string        `json:"model"`
	Stream           bool          `json:"stream"`
	Content          string        `json:"content"`
	CompletionTokens int           `json:"completionTokens"` // as the server reports them; chunks when streaming
	FirstToken       time.Duration `json:"firstTokenNanos"`  // from sending the request to the first content
	Total            time.Duration `json:"totalNanos"`       // from sending the request to the end of the answer
}

var httpClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

func chatRequest(ctx context.Context, baseURL, model string, stream bool) (*http.Request, error) {
	body, err := json.Marshal(map[string]any{
		"model":       model,
		"messages":    []map[string]string{{"role": "user", "content": SmokePrompt}},
		"max_tokens":  smokeMaxTokens,
		"temperature": 0,
		"seed":        1,
		"stream":      stream,
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// Smoke sends the fixed prompt to baseURL's chat completions endpoint and
// succeeds only when the answer carries at least one token of content.
func Smoke(ctx context.Context, baseURL, model string) (SmokeResult, error) {
	res := SmokeResult{Model: model}
	req, err := chatRequest(ctx, baseURL, model, false)
	if err != nil {
		return res, fmt.Errorf("smoke test: %w", err)
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return res, fmt.Errorf("smoke test: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res.Total = time.Since(start)
	res.FirstToken = res.Total
	if err != nil {
		return res, fmt.Errorf("smoke test: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("smoke test: %s: %s", resp.Status, lastLines(string(data), 3))
	}
	var answer struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return res, fmt.Errorf("smoke test: decode answer: %w", err)
	}
	if len(answer.Choices) == 0 {
		return res, errors.New("smoke test: the answer has no choices")
	}
	res.Content = answer.Choices[0].Message.Content
	res.CompletionTokens = answer.Usage.CompletionTokens
	if res.Content == "" || res.CompletionTokens == 0 {
		return res, fmt.Errorf("smoke test: the answer carries no tokens (%d completion tokens, %q)", res.CompletionTokens, res.Content)
	}
	return res, nil
}

// SmokeStream is Smoke with a streamed answer: server-sent events, each a
// chat.completion.chunk, ending with "data: [DONE]".
func SmokeStream(ctx context.Context, baseURL, model string) (SmokeResult, error) {
	res := SmokeResult{Model: model, Stream: true}
	req, err := chatRequest(ctx, baseURL, model, true)
	if err != nil {
		return res, fmt.Errorf("smoke test (streamed): %w", err)
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return res, fmt.Errorf("smoke test (streamed): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return res, fmt.Errorf("smoke test (streamed): %s: %s", resp.Status, lastLines(string(data), 3))
	}
	content, chunks, err := parseStream(resp.Body, func() {
		if res.FirstToken == 0 {
			res.FirstToken = time.Since(start)
		}
	})
	res.Total = time.Since(start)
	res.Content, res.CompletionTokens = content, chunks
	if err != nil {
		return res, fmt.Errorf("smoke test (streamed): %w", err)
	}
	if content == "" {
		return res, errors.New("smoke test (streamed): the answer carries no tokens")
	}
	return res, nil
}

// parseStream reads an OpenAI chat completion event stream and returns the
// concatenated content and how many chunks carried content. onContent runs
// at each such chunk. A stream that ends without "data: [DONE]" is an error.
func parseStream(r io.Reader, onContent func()) (content string, chunks int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var b strings.Builder
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, ":") {
			continue
		}
		data, ok := strings.CutPrefix(text, "data:")
		if !ok {
			continue // event:, id: and retry: fields carry nothing we need
		}
		data = strings.TrimSpace(data)
		if data == "[DONE]" {
			return b.String(), chunks, nil
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return b.String(), chunks, fmt.Errorf("event stream line %d: %w", line, err)
		}
		if chunk.Error != nil {
			return b.String(), chunks, fmt.Errorf("event stream line %d: server error: %s", line, chunk.Error.Message)
		}
		for _, c := range chunk.Choices {
			if c.Delta.Content != "" {
				chunks++
				b.WriteString(c.Delta.Content)
				if onContent != nil {
					onContent()
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return b.String(), chunks, fmt.Errorf("event stream line %d: %w", line+1, err)
	}
	return b.String(), chunks, errors.New("event stream ended without data: [DONE]")
}

// getOK reports whether GET baseURL+path answers 200, with the body.
func getOK(ctx context.Context, baseURL, path string) (bool, []byte) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+path, nil)
	if err != nil {
		return false, nil
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return false, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode == http.StatusOK, body
}

// modelListed reports whether an OpenAI model list names model (Ollama adds
// a ":latest" tag).
func modelListed(body []byte, model string) bool {
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &list) != nil {
		return false
	}
	for _, m := range list.Data {
		if m.ID == model || m.ID == model+":latest" {
			return true
		}
	}
	return false
}
