package runtime

import (
	"strings"
	"testing"
)

func TestParseStream(t *testing.T) {
	good := "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"he\"}}]}\n\n" +
		": keep-alive\n\nevent: message\ndata: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}]}\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n"
	content, chunks, err := parseStream(strings.NewReader(good), nil)
	if err != nil || content != "hello" || chunks != 2 {
		t.Errorf("got %q, %d chunks, %v", content, chunks, err)
	}
	for name, c := range map[string]struct{ in, want string }{
		"no done":      {"data: {\"choices\":[]}\n", "ended without data: [DONE]"},
		"bad json":     {"data: {\"choices\":\n", "event stream line 1"},
		"server error": {"data: {\"error\":{\"message\":\"model not found\"}}\n", "model not found"},
	} {
		if _, _, err := parseStream(strings.NewReader(c.in), nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestModelListed(t *testing.T) {
	body := []byte(`{"object":"list","data":[{"id":"demo:latest","object":"model"}]}`)
	if !modelListed(body, "demo") || modelListed(body, "dem") || modelListed([]byte("{"), "demo") {
		t.Error("modelListed")
	}
}

func FuzzParseStream(f *testing.F) {
	f.Add("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n")
	f.Add(": comment\nevent: x\ndata: [DONE]")
	f.Add("data: {\"error\":{\"message\":\"x\"}}\n")
	f.Fuzz(func(t *testing.T, in string) {
		content, chunks, _ := parseStream(strings.NewReader(in), nil)
		if chunks == 0 && content != "" {
			t.Fatalf("content %q from zero chunks", content)
		}
	})
}
