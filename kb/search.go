package kb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Query is one search.
type Query struct {
	Text       string
	Caller     Caller
	K          int    // results wanted (default 5, at most MaxK)
	Collection string // "" searches every collection
	TokenID    string // the gateway token asking, for the audit log ("" from the CLI)
	// Dense, when set, also ranks the readable chunks by the cosine of
	// their stored vectors of Dense.Model (see EmbedChunks) to the
	// query's, and fuses both rankings by reciprocal rank fusion; Score
	// is then the fused score. Off by default.
	Dense *Embedder
}

// MaxK bounds the results of one search.
const MaxK = 100

// maxQueryTerms bounds the terms of one query: a pasted page cannot make a
// search scan the whole index once per character.
const maxQueryTerms = 96

// Hit is one retrieved chunk.
type Hit struct {
	Chunk      int64   `json:"chunk"`
	Doc        int64   `json:"doc"`
	Version    int     `json:"version"`
	Title      string  `json:"title"`
	Source     string  `json:"source"`
	Collection string  `json:"collection,omitempty"`
	Heading    string  `json:"heading,omitempty"`
	Page       int     `json:"page,omitempty"`
	Class      Class   `json:"class"`
	SHA256     string  `json:"sha256"`
	Text       string  `json:"text"`
	Flagged    bool    `json:"flagged,omitempty"`
	Score      float64 `json:"score"`
}

// Ranking parameters, measured on CMRC 2018 (see docs/kb.md; chosen on half of
// the questions, checked on the other half, and flat around these values).
// Chunks and whole documents are both scored with BM25 (k1, b); a chunk's
// score is its own plus docWeight times its document's, so a chunk of the
// document that is about the question outranks a stray match elsewhere.
// A low k1 saturates term frequency early: in 200-character chunks, which
// question terms occur matters more than how often.
var (
	k1        = 0.5
	bParam    = 0.4
	docWeight = 0.5
	// uniWeight scales the score of a single CJK character against a pair:
	// a pair is much more specific, and a question shares its characters
	// with many sentences besides the one that answers it.
	uniWeight = 1.0
)

// ErrEmptyQuery is returned for a query with no searchable terms.
var ErrEmptyQuery = errors.New("the query has no searchable words")

// queryTerms returns the distinct terms of a query, at most maxQueryTerms
// of them. It returns ErrEmptyQuery when text has none.
func queryTerms(text string) ([]string, error) {
	var out, asked []string
	for _, t := range Tokens(text) {
		if len(out) == maxQueryTerms {
			break
		}
		if slices.Contains(out, t) || slices.Contains(asked, t) {
			continue
		}
		if dropQuestionWords && questionWord(t) {
			asked = append(asked, t)
			continue
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		out = asked // a query of question words only: search for them
	}
	if len(out) == 0 {
		return nil, ErrEmptyQuery
	}
	return out, nil
}

var dropQuestionWords = true

// questionWord reports whether a query term is part of how a Chinese
// question is asked (什么, 哪个, 谁, 多少, 如何…) rather than what it is
// about. Those words are rare in the declarative text that answers the
// question, so BM25 would otherwise reward a chunk for containing them.
func questionWord(t string) bool {
	if strings.ContainsAny(t, "什么吗呢啥") {
		return true
	}
	switch t {
	case "哪", "谁", "几", "第几", "多久", "多长", "多大", "多高", "多远", "何时", "何地", "何人", "请问", "哪个", "哪些", "哪里", "哪儿", "哪位", "哪一", "哪年", "哪种", "哪家", "哪国", "哪部", "哪座",
		"多少", "如何", "怎样", "为何", "是否", "是谁", "有谁", "由谁", "被谁", "几个", "几年", "几种", "几次", "几位", "是哪", "在哪", "于哪":
		return true
	}
	return false
}

// Search returns the chunks that best match q and that q.Caller may read,
// best first. Access is applied inside the ranking: postings of documents
// the caller may not read are skipped before anything is scored, and the
// collection statistics BM25 uses (document counts, lengths, term
// frequencies) are those of the readable documents only. So the results,
// their scores and their number are exactly what they would be if the
// unreadable documents did not exist. Errors: ErrEmptyQuery, and database
// errors, which never name a chunk or document.
func (k *DB) Search(ctx context.Context, q Query) ([]Hit, error) {
	hits, denied, err := k.search(ctx, q)
	if err != nil {
		return nil, err
	}
	k.auditQuery(q, hits, denied)
	return hits, nil
}

// search is Search without the audit event: it also returns how many
// matching chunks were skipped as unreadable, which only the audit log
// may learn (BuildPrompt writes its own event, one per answer).
func (k *DB) search(ctx context.Context, q Query) ([]Hit, int, error) {
	if q.K <= 0 {
		q.K = 5
	}
	q.K = min(q.K, MaxK)
	terms, err := queryTerms(q.Text)
	if err != nil {
		return nil, 0, err
	}
	x, err := k.current(ctx)
	if err != nil {
		return nil, 0, err
	}
	if q.Dense == nil {
		cands, denied := x.search(terms, q)
		hits, err := k.hits(ctx, x, cands, q.Caller)
		if err != nil {
			return nil, 0, err
		}
		return hits, denied, nil
	}
	deep := q
	deep.K = max(q.K, denseDepth)
	cands, denied := x.search(terms, deep)
	lex := make([]scored, len(cands))
	for i, c := range cands {
		lex[i] = scored{x.chunkID[c.chunk], c.score}
	}
	dense, err := k.denseSearch(ctx, q, denseDepth)
	if err != nil {
		return nil, 0, err
	}
	hits, err := k.hitsByID(ctx, fuse(q.K, lex, dense), q.Caller, 1e6)
	if err != nil {
		return nil, 0, err
	}
	return hits, denied, nil
}

type candidate struct {
	chunk uint32
	score float64
}

// search ranks the readable chunks for terms and returns the best q.K, and
// how many chunks matching some term were skipped as unreadable (for the
// audit log only).
func (x *index) search(terms []string, q Query) ([]candidate, int) {
	ok := x.readable(q.Caller, q.Collection)
	var nc, nd int
	var lc, ld float64
	for d, r := range ok {
		if r {
			nd++
			nc += int(x.docChunks[d])
			lc += float64(x.docChunkLn[d])
			ld += float64(x.docLen[d])
		}
	}
	if nc == 0 {
		return nil, 0
	}
	avgC, avgD := lc/float64(nc), ld/float64(nd)

	docScore := make([]float32, len(x.docID))
	chunkScore := make([]float32, len(x.chunkID))
	var touched []uint32
	denied := make([]bool, len(x.chunkID)) // chunks matched but unreadable, counted once each
	nDenied := 0
	var found []string
	var nums []uint32
	for _, t := range terms {
		if n, ok := x.lookup(t); ok {
			found = append(found, t)
			nums = append(nums, n)
		}
	}
	// One buffer for every list of the query, decoded in turn, kept for
	// the next search: it can be as large as chunkScore.
	bp, _ := postBufs.Get().(*[]uint32)
	if bp == nil {
		bp = new([]uint32)
	}
	defer postBufs.Put(bp)
	buf := slices.Grow((*bp)[:0], max(x.chunkPost.longest(nums), x.docPost.longest(nums)))
	*bp = buf
	for i, t := range found {
		n := nums[i]
		post, skipped := x.chunkPost.split(buf, n, ok, x.chunkDoc)
		for _, p := range skipped {
			if c := p >> 8; !denied[c] {
				denied[c] = true
				nDenied++
			}
		}
		df := len(post)
		if df == 0 {
			continue
		}
		w := 1.0
		if isUnigram(t) {
			w = uniWeight
		}
		idf := w * bm25IDF(nc, df)
		for _, p := range post {
			c := p >> 8
			if chunkScore[c] == 0 {
				touched = append(touched, c)
			}
			chunkScore[c] += float32(idf * bm25TF(float64(p&0xff), float64(x.chunkLen[c]), avgC))
		}
		dpost, _ := x.docPost.split(buf, n, ok, nil)
		idf = w * bm25IDF(nd, len(dpost))
		for _, p := range dpost {
			d := p >> 8
			docScore[d] += float32(idf * bm25TF(float64(p&0xff), float64(x.docLen[d]), avgD))
		}
	}
	// Keep the best q.K in a min-heap: one pass over the touched chunks,
	// no sort of all of them.
	h := make(candHeap, 0, q.K)
	for _, c := range touched {
		cd := candidate{c, float64(chunkScore[c]) + docWeight*float64(docScore[x.chunkDoc[c]])}
		if len(h) < q.K {
			h.push(cd)
		} else if better(cd, h[0]) {
			h[0] = cd
			h.down(0)
		}
	}
	cands := []candidate(h)
	slices.SortFunc(cands, func(a, b candidate) int {
		if better(a, b) {
			return -1
		}
		return 1
	})
	return cands, nDenied
}

// postBufs holds the buffers search decodes posting lists into.
var postBufs sync.Pool

// better orders candidates: higher score first, then lower chunk number,
// so that results are stable.
func better(a, b candidate) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.chunk < b.chunk
}

// candHeap is a min-heap by better: its root is the worst kept candidate.
type candHeap []candidate

func (h *candHeap) push(c candidate) {
	*h = append(*h, c)
	for i := len(*h) - 1; i > 0; {
		p := (i - 1) / 2
		if !better((*h)[p], (*h)[i]) {
			break
		}
		(*h)[p], (*h)[i] = (*h)[i], (*h)[p]
		i = p
	}
}

func (h candHeap) down(i int) {
	for {
		l, worst := 2*i+1, i
		if l < len(h) && better(h[worst], h[l]) {
			worst = l
		}
		if r := l + 1; r < len(h) && better(h[worst], h[r]) {
			worst = r
		}
		if worst == i {
			return
		}
		h[i], h[worst] = h[worst], h[i]
		i = worst
	}
}

func bm25IDF(n, df int) float64 {
	return math.Log(1 + (float64(n)-float64(df)+0.5)/(float64(df)+0.5))
}

func bm25TF(tf, dl, avg float64) float64 {
	return tf * (k1 + 1) / (tf + k1*(1-bParam+bParam*dl/avg))
}

// hitSQL loads the chunks of a result, checking access again in the same
// statement: a document whose access changed after the index was read is
// dropped rather than shown.
const hitSQL = `
SELECT c.id, c.doc, d.version, d.title, d.source, d.collection, c.heading, c.page, d.class, d.sha256, c.text, c.flagged
FROM chunks c JOIN documents d ON d.id = c.doc
WHERE c.id IN (SELECT value FROM json_each(?1)) AND d.class <= ?2
  AND EXISTS (SELECT 1 FROM acl a WHERE a.doc = c.doc AND a.principal IN (SELECT value FROM json_each(?3)))`

// hits loads the chunks named by cands, in order.
func (k *DB) hits(ctx context.Context, x *index, cands []candidate, caller Caller) ([]Hit, error) {
	ranked := make([]scored, len(cands))
	for i, c := range cands {
		ranked[i] = scored{x.chunkID[c.chunk], c.score}
	}
	return k.hitsByID(ctx, ranked, caller, 1e3)
}

// hitsByID loads the chunks named by ranked, in order, with their scores
// rounded to 1/round.
func (k *DB) hitsByID(ctx context.Context, ranked []scored, caller Caller, round float64) ([]Hit, error) {
	if len(ranked) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(ranked))
	for i, r := range ranked {
		ids[i] = r.id
	}
	idList, _ := json.Marshal(ids)
	principals, _ := json.Marshal(caller.principals())
	rows, err := k.db.QueryContext(ctx, hitSQL, string(idList), int(caller.Clearance), string(principals))
	if err != nil {
		return nil, fmt.Errorf("search: load results: %w", err)
	}
	defer rows.Close()
	byID := make(map[int64]Hit, len(ranked))
	for rows.Next() {
		var h Hit
		var class int
		if err := rows.Scan(&h.Chunk, &h.Doc, &h.Version, &h.Title, &h.Source, &h.Collection, &h.Heading, &h.Page, &class, &h.SHA256, &h.Text, &h.Flagged); err != nil {
			return nil, fmt.Errorf("search: load results: %w", err)
		}
		h.Class = Class(class)
		byID[h.Chunk] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search: load results: %w", err)
	}
	out := make([]Hit, 0, len(ranked))
	for _, r := range ranked {
		h, ok := byID[r.id]
		if !ok {
			continue // removed or no longer readable since the index was read
		}
		h.Score = math.Round(r.score*round) / round
		out = append(out, h)
	}
	return out, nil
}

// isUnigram reports whether t is a single CJK character.
func isUnigram(t string) bool {
	r, n := utf8.DecodeRuneInString(t)
	return n == len(t) && isCJK(r)
}
