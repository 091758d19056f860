package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func kbAskCommand(dbFlag cli.Flag, auditFlags []cli.Flag, jsonFlag cli.Flag) *cli.Command {
	flags := append(append([]cli.Flag{dbFlag}, auditFlags...),
		&cli.StringSliceFlag{Name: "as", Usage: "principals to ask as (role:NAME, user:TOKEN-ID); 'all' is implied"},
		&cli.StringFlag{Name: "clearance", Usage: "clearance with --as", Value: "public"},
		&cli.StringFlag{Name: "as-token", Usage: "ask as this gateway token ID (roles and clearance from --tokens, read now)"},
		&cli.StringFlag{Name: "tokens", Usage: "token file for --as-token", Value: defaultTokensPath},
		&cli.StringFlag{Name: "upstream", Usage: "the runtime, http://127.0.0.1:PORT (default: from the install state under --root)"},
		&cli.StringFlag{Name: "root", Usage: "the installation's root PREFIX, for the runtime's address", Value: "/"},
		&cli.StringFlag{Name: "model", Usage: "model to ask (default: the first the runtime lists)"},
		&cli.IntFlag{Name: "max-tokens", Usage: "longest answer, in tokens", Value: 512},
		&cli.IntFlag{Name: "context-tokens", Usage: "the model's context window as served", Value: kb.DefaultContextTokens},
		&cli.DurationFlag{Name: "timeout", Usage: "time allowed for the model's answer", Value: 5 * time.Minute},
		jsonFlag,
	)
	return &cli.Command{
		Name:      "ask",
		Usage:     "answer from the documents a role may read, with citations, via the running runtime",
		UsageText: "qwen-appliance kb ask QUESTION (--as role:R[,...] [--clearance C] | --as-token ID [--tokens F]) [--upstream URL] [--model M] [--json]",
		Description: "The same answer code as the gateway's /v1/kb/chat/completions, without the gateway:\n" +
			"the chunks the caller may read are retrieved inside the index and sent to the model\n" +
			"as numbered blocks; citations of blocks that were never given are removed. When\n" +
			"nothing readable is relevant the answer is the not-found text and the model is not\n" +
			"called. The runtime is the one the install state names, or --upstream. One kb.query\n" +
			"event goes to --audit-log (pass --audit-log '' while the gateway holds it).\n\n" +
			"Example:\n   qwen-appliance kb ask '年假有多少天？' --as role:hr --clearance internal --audit-log ''",
		Flags:  flags,
		Action: kbAsk,
	}
}

// kbAskResult is what kb ask prints with --json.
type kbAskResult struct {
	Answer      string        `json:"answer"`
	Citations   []kb.Citation `json:"citations"`
	ModelCalled bool          `json:"model_called"`
	Model       string        `json:"model,omitempty"`
	Decision    string        `json:"decision"`
}

func kbAsk(c *cli.Context) (err error) {
	if c.NArg() != 1 {
		return usagef("quote the question: kb ask 'QUESTION' --as role:R", "want one question, got %d arguments", c.NArg())
	}
	caller, err := callerFromFlags(c)
	if err != nil {
		return err
	}
	if c.Int("max-tokens") < 1 || c.Int("context-tokens") < 512 {
		return usagef("pass --max-tokens of at least 1 and --context-tokens of at least 512", "--max-tokens %d, --context-tokens %d", c.Int("max-tokens"), c.Int("context-tokens"))
	}
	up := c.String("upstream")
	if up == "" {
		st, err := state.Load(c.String("root"))
		if err != nil || len(st.Runtime.Listen) == 0 {
			return withCode(exitError, fmt.Errorf("no runtime address: %v", err), "pass --upstream http://127.0.0.1:PORT, or --root of an installation")
		}
		up = "http://" + st.Runtime.Listen[0]
	}
	if u, err := url.Parse(up); err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return usagef("pass --upstream http://127.0.0.1:PORT", "--upstream %q is not http://HOST:PORT", up)
	}
	up = strings.TrimSuffix(up, "/")
	k, err := kb.OpenReadOnly(c.String("db"))
	if err != nil {
		return withCode(exitError, err, "check --db (default "+defaultKBPath+", inside the model store)")
	}
	defer func() { err = errors.Join(err, k.Close()) }()
	var log *audit.Log
	if p := c.String("audit-log"); p != "" {
		o := audit.Options{Path: p}
		if kp := c.String("audit-key"); kp != "" {
			key, err := manifests.LoadPrivateKey(kp)
			if err != nil {
				return withCode(exitError, err, "check --audit-key")
			}
			o.Key = &key
		}
		if log, err = audit.Open(o); err != nil {
			return withCode(exitError, err, "check --audit-log (pass --audit-log '' to run without one; the running gateway holds its own)")
		}
		defer func() { err = errors.Join(err, log.Close()) }()
	}
	q := c.Args().First()
	p, err := k.BuildPrompt(c.Context, caller, []kb.Turn{{Role: "user", Text: q}},
		kb.PromptOptions{ContextTokens: c.Int("context-tokens"), ReserveTokens: c.Int("max-tokens")})
	switch {
	case errors.Is(err, kb.ErrNoQuestion):
		return usagef("ask a question with words in it", "%v", err)
	case errors.Is(err, kb.ErrNoRoom):
		return usagef("pass a smaller --max-tokens or a larger --context-tokens", "%v", err)
	case err != nil:
		return withCode(exitError, err, "check --db")
	}
	res := kbAskResult{Answer: p.NotFound, Citations: []kb.Citation{}, ModelCalled: p.NotFound == "", Decision: p.Decision}
	if log != nil {
		log.Append(audit.Record{Kind: audit.KindKBQuery, TokenID: c.String("as-token"), KB: k.AuditEvent(p, res.ModelCalled)})
	}
	if res.ModelCalled {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		defer cancel()
		model := c.String("model")
		if model == "" {
			if model, err = firstModel(ctx, up); err != nil {
				return withCode(exitError, err, "check that the runtime runs ('qwen-appliance status'), or pass --upstream and --model")
			}
		}
		text, err := complete(ctx, up, model, p.System, q, c.Int("max-tokens"))
		if errors.Is(err, context.Canceled) {
			return withCode(exitCancelled, err, "")
		}
		if err != nil {
			return withCode(exitError, err, "check that the runtime runs ('qwen-appliance status'), or pass --upstream")
		}
		var cited []int
		res.Answer, cited = kb.StripCitations(text, len(p.Citations))
		res.Citations, res.Model = p.CitationsCited(cited), model
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	w := c.App.Writer
	fmt.Fprintln(w, strings.TrimSpace(res.Answer))
	if len(res.Citations) > 0 {
		fmt.Fprintln(w, "\nSources:")
	}
	for _, ct := range res.Citations {
		where := ct.Title
		if ct.Heading != "" && ct.Heading != ct.Title {
			where += " > " + ct.Heading
		}
		if ct.Page > 0 {
			where += fmt.Sprintf(" (p. %d)", ct.Page)
		}
		mark := ""
		if !ct.Cited {
			mark = " (given, not cited)"
		}
		fmt.Fprintf(w, "[%d] %s — doc %d v%d sha256:%s%s\n", ct.Index, where, ct.Doc, ct.Version, ct.SHA256, mark)
	}
	return nil
}

// firstModel asks the runtime which model it serves.
func firstModel(ctx context.Context, up string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, up+"/v1/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("ask the runtime for its models: %w", err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil || len(list.Data) == 0 {
		return "", fmt.Errorf("the runtime at %s lists no model (status %d)", up, resp.StatusCode)
	}
	return list.Data[0].ID, nil
}

// complete sends the question with the knowledge-base system message and
// returns the model's answer.
func complete(ctx context.Context, up, model, system, question string, maxTokens int) (string, error) {
	body, _ := json.Marshal(map[string]any{"model": model, "max_tokens": maxTokens, "stream": false,
		"messages": []map[string]string{{"role": "system", "content": system}, {"role": "user", "content": question}}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("ask the model: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("read the model's answer: %w", err)
	}
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &out) != nil || len(out.Choices) == 0 {
		return "", fmt.Errorf("the model at %s answered status %d, not a chat completion", up, resp.StatusCode)
	}
	return out.Choices[0].Message.Content, nil
}
