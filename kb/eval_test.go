package kb

import (
	"context"
	"os"
	"testing"
)

// TestEvalCMRC holds the lexical search to its measured quality on CMRC
// 2018 (see docs/kb.md): answer recall@1 must not fall below 0.87, the
// reference BM25's figure.
func TestEvalCMRC(t *testing.T) {
	if testing.Short() {
		t.Skip("indexes 848 passages and runs 3,219 queries")
	}
	corpus, err := os.Open("testdata/cmrc2018/corpus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer corpus.Close()
	queries, err := os.Open("testdata/cmrc2018/queries.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer queries.Close()
	rep, err := Eval(context.Background(), corpus, queries, EvalOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *rep)
	if rep.AnswerRecall1 < 0.87 {
		t.Errorf("answer recall@1 = %.3f, want >= 0.87", rep.AnswerRecall1)
	}
	if rep.Recall1 < 0.9 {
		t.Errorf("passage recall@1 = %.3f, want >= 0.9", rep.Recall1)
	}
}
