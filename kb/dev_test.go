package kb

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func envf(n string, d float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(n), 64); err == nil {
		return v
	}
	return d
}

func TestDevSweep(t *testing.T) {
	if os.Getenv("KBDEV") == "" {
		t.Skip()
	}
	ctx := context.Background()
	dropQuestionWords = os.Getenv("NOQW") == ""
	dir := t.TempDir()
	k, _ := Open(filepath.Join(dir, "kb.db"))
	defer k.Close()
	corpus, _ := os.Open("testdata/cmrc2018/corpus.jsonl")
	co := ChunkOptions{MaxChars: int(envf("MAXC", 200)), Overlap: int(envf("OVL", 60))}
	readJSONL(corpus, func(line int, p *EvalPassage) error {
		_, err := k.Put(ctx, Document{Title: p.Title, Source: p.ID, Format: "text", Allow: []Principal{All}, Raw: []byte(p.Text), Sections: []Section{{Text: p.Text}}}, co)
		return err
	})
	x, _ := k.current(ctx)
	text := map[int64]string{}
	rows, _ := k.db.Query(`SELECT id, text FROM chunks`)
	for rows.Next() {
		var id int64
		var s string
		rows.Scan(&id, &s)
		text[id] = s
	}
	rows.Close()
	var qs []*EvalQuery
	qf, _ := os.Open("testdata/cmrc2018/queries.jsonl")
	readJSONL(qf, func(line int, q *EvalQuery) error { qs = append(qs, q); return nil })
	t.Logf("chunks %d", len(x.chunkID))
	k1, bParam, docWeight, uniWeight = 0.8, 0.5, 0.5, 1
	all := Caller{}
	ok := x.readable(all, "")
	_ = ok
	_ = func(t string) float64 {
		n, found := x.lookup(t)
		if !found {
			return 0
		}
		return bm25IDF(len(x.chunkID), len(x.chunkPost[n]))
	}
	for _, dw := range []float64{0.25, 0.5} {
		for _, kk := range []float64{0.3, 0.45, 0.6} {
			for _, bb := range []float64{0.3, 0.4} {
				docWeight, k1, bParam = dw, kk, bb
				var r1 [2]int
				for i, q := range qs {
					terms, _ := queryTerms(q.Question)
					c, _ := x.search(terms, Query{K: 1})
					if len(c) > 0 && containsAny(text[x.chunkID[c[0].chunk]], q.Answers) {
						r1[i%2]++
					}
				}
				t.Logf("dw %.2f k1 %.2f b %.1f: R@1 even %.4f odd %.4f", dw, kk, bb, float64(r1[0])/float64((len(qs)+1)/2), float64(r1[1])/float64(len(qs)/2))
			}
		}
	}
}
