package kb

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// EvalPassage is one line of an evaluation corpus (CMRC 2018 retrieval
// form): {"id", "title", "text"}.
type EvalPassage struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	Text  string `json:"text"`
}

// EvalQuery is one line of an evaluation query file: the question, the
// passage it was written from and the answer spans.
type EvalQuery struct {
	ID       string   `json:"id"`
	Question string   `json:"question"`
	Passage  string   `json:"passage"`
	Answers  []string `json:"answers"`
}

// EvalReport is what Eval measures. Passage figures map each retrieved
// chunk to its passage (the first chunk of a passage counts); chunk figures
// are answer recall: the share of questions with an answer string in the
// text of the top k chunks.
type EvalReport struct {
	Passages      int     `json:"passages"`
	Chunks        int     `json:"chunks"`
	Queries       int     `json:"queries"`
	NDCG10        float64 `json:"passageNDCG@10"`
	MRR10         float64 `json:"passageMRR@10"`
	Recall1       float64 `json:"passageRecall@1"`
	Recall5       float64 `json:"passageRecall@5"`
	AnswerRecall1 float64 `json:"answerRecall@1"`
	AnswerRecall3 float64 `json:"answerRecall@3"`
	AnswerRecall5 float64 `json:"answerRecall@5"`
	IngestSeconds float64 `json:"ingestSeconds"`
	QueryMsMean   float64 `json:"queryMsMean"`
}

// EvalOptions configure Eval.
type EvalOptions struct {
	Chunking ChunkOptions
	Dir      string // where the scratch database goes (default: the system's temp dir)
}

// Eval indexes the passages of corpus into a scratch knowledge base (every
// passage readable by "all"), runs every query of queries through Search
// and scores the results.
func Eval(ctx context.Context, corpus, queries io.Reader, o EvalOptions) (*EvalReport, error) {
	dir, err := os.MkdirTemp(o.Dir, "kb-eval-*")
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer os.RemoveAll(dir)
	k, err := Open(filepath.Join(dir, "kb.db"))
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer k.Close()
	rep := &EvalReport{}
	start := time.Now()
	err = readJSONL(corpus, func(line int, p *EvalPassage) error {
		if p.ID == "" {
			return fmt.Errorf("corpus line %d: no id", line)
		}
		res, err := k.Put(ctx, Document{Title: p.Title, Source: p.ID, Format: "text", Class: Public,
			Allow: []Principal{All}, Raw: []byte(p.Text), Sections: []Section{{Text: p.Text}}}, o.Chunking)
		if err != nil {
			return err
		}
		rep.Passages++
		rep.Chunks += res.Chunks
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	rep.IngestSeconds = time.Since(start).Seconds()
	var qtime time.Duration
	err = readJSONL(queries, func(line int, q *EvalQuery) error {
		t := time.Now()
		hits, err := k.Search(ctx, Query{Text: q.Question, K: 10})
		qtime += time.Since(t)
		if err != nil {
			return fmt.Errorf("queries line %d: %w", line, err)
		}
		rep.Queries++
		rank := 0 // of the first chunk of the right passage, 1-based
		for i, h := range hits {
			if h.Source == q.Passage {
				rank = i + 1
				break
			}
		}
		if rank > 0 && rank <= 10 {
			rep.MRR10 += 1 / float64(rank)
			rep.NDCG10 += 1 / math.Log2(float64(rank)+1)
		}
		if rank == 1 {
			rep.Recall1++
		}
		if rank > 0 && rank <= 5 {
			rep.Recall5++
		}
		for i, h := range hits {
			if containsAny(h.Text, q.Answers) {
				if i < 1 {
					rep.AnswerRecall1++
				}
				if i < 3 {
					rep.AnswerRecall3++
				}
				if i < 5 {
					rep.AnswerRecall5++
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	if rep.Queries == 0 {
		return nil, fmt.Errorf("eval: no queries")
	}
	n := float64(rep.Queries)
	for _, f := range []*float64{&rep.NDCG10, &rep.MRR10, &rep.Recall1, &rep.Recall5, &rep.AnswerRecall1, &rep.AnswerRecall3, &rep.AnswerRecall5} {
		*f = math.Round(*f/n*1000) / 1000
	}
	rep.QueryMsMean = math.Round(float64(qtime.Microseconds())/n) / 1000
	return rep, nil
}

func containsAny(s string, subs []string) bool {
	for _, a := range subs {
		if a != "" && strings.Contains(s, a) {
			return true
		}
	}
	return false
}

// readJSONL decodes one JSON object per line of r into a fresh T and hands
// it to fn, with the 1-based line number. Blank lines are skipped.
func readJSONL[T any](r io.Reader, fn func(line int, v *T) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := fn(line, v); err != nil {
			return err
		}
	}
	return sc.Err()
}
