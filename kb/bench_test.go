package kb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/driver"
	"github.com/ncruces/go-sqlite3/ext/fts5"
)

// The benchmarks build a corpus of about KB_BENCH_CHUNKS chunks (default
// 100,000) by shuffling the sentences of CMRC 2018 into documents of about
// 25 chunks each, so the text, its vocabulary and its term frequencies are
// real Chinese. Run them with scripts/bench/kb.sh.

type benchCorpus struct {
	docs      []Document
	textBytes int
	questions []string
}

var (
	benchOnce sync.Once
	bench     benchCorpus
)

func loadBenchCorpus(tb testing.TB) *benchCorpus {
	benchOnce.Do(func() {
		want := 100000
		if s := os.Getenv("KB_BENCH_CHUNKS"); s != "" {
			want, _ = strconv.Atoi(s)
		}
		f, err := os.Open("testdata/cmrc2018/corpus.jsonl")
		if err != nil {
			tb.Fatal(err)
		}
		defer f.Close()
		var sents []string
		readJSONL(f, func(_ int, p *EvalPassage) error {
			sents = append(sents, sentences(p.Text, 200)...)
			return nil
		})
		qf, _ := os.Open("testdata/cmrc2018/queries.jsonl")
		defer qf.Close()
		readJSONL(qf, func(_ int, q *EvalQuery) error {
			bench.questions = append(bench.questions, q.Question)
			return nil
		})
		r := rand.New(rand.NewPCG(1, 2))
		// 90 sentences make a document of about 24.5 chunks.
		nDocs := want * 2 / 49
		for d := 0; d < nDocs; d++ {
			var b strings.Builder
			for range 90 {
				b.WriteString(sents[r.IntN(len(sents))])
			}
			text := b.String()
			bench.textBytes += len(text)
			bench.docs = append(bench.docs, Document{Title: fmt.Sprintf("文档%d", d), Source: fmt.Sprintf("bench/%d.txt", d),
				Format: "text", Class: Class(d % 3), Allow: []Principal{[]Principal{All, "role:hr", "role:finance"}[d%3]},
				Raw: []byte(text), Sections: []Section{{Text: text}}})
		}
	})
	return &bench
}

var (
	benchDBOnce sync.Once
	benchDB     *DB
	benchDir    string
	benchIngest time.Duration
	// benchIngestCPU is the process's CPU time during ingest: on a machine
	// shared with other work, text per CPU-second is the steadier figure.
	benchIngestCPU time.Duration
	benchChunks    int
)

func benchKB(tb testing.TB) *DB {
	c := loadBenchCorpus(tb)
	benchDBOnce.Do(func() {
		var err error
		benchDir, err = os.MkdirTemp("", "kb-bench-*")
		if err != nil {
			tb.Fatal(err)
		}
		benchDB, err = Open(filepath.Join(benchDir, "kb.db"))
		if err != nil {
			tb.Fatal(err)
		}
		start, cpu0 := time.Now(), cpuTime()
		for _, d := range c.docs {
			res, err := benchDB.Put(context.Background(), d, ChunkOptions{})
			if err != nil {
				tb.Fatal(err)
			}
			benchChunks += res.Chunks
		}
		benchIngest, benchIngestCPU = time.Since(start), cpuTime()-cpu0
	})
	return benchDB
}

// BenchmarkIngest reports the ingest rate of extracted text into a fresh
// knowledge base (chunking, flagging and the transactional writes; the term
// index is built on the first search, measured in BenchmarkIndexBuild).
func BenchmarkIngest(b *testing.B) {
	c := loadBenchCorpus(b)
	benchKB(b)
	for b.Loop() {
	}
	b.ReportMetric(float64(c.textBytes)/benchIngest.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(c.textBytes)/benchIngestCPU.Seconds()/1e6, "MB/cpu-s")
	b.ReportMetric(float64(benchChunks), "chunks")
}

// BenchmarkIndexBuild is the time to build the in-memory index from the
// database: what a process pays on its first search and after each write.
func BenchmarkIndexBuild(b *testing.B) {
	k := benchKB(b)
	cpu0 := cpuTime()
	var x *index
	for b.Loop() {
		var err error
		if x, err = k.loadIndex(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(x.chunkPost.size()+x.docPost.size())/1e6, "postings-MB")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	// The heap the index holds, per chunk: what a search process needs.
	var before, after runtime.MemStats
	x = nil
	runtime.GC()
	runtime.ReadMemStats(&before)
	x, err := k.loadIndex(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(x.chunkID)), "index-B/chunk")
	runtime.KeepAlive(x)
}

// BenchmarkSearch reports p50 and p99 of Search, end to end (index
// freshness check, ranking with access filtering, loading the results from
// SQLite), as a caller with role:hr at internal clearance, for real CMRC
// questions.
func BenchmarkSearch(b *testing.B) {
	k := benchKB(b)
	c := loadBenchCorpus(b)
	caller := Caller{Principals: []Principal{"role:hr"}, Clearance: Internal}
	ctx := context.Background()
	if _, err := k.Search(ctx, Query{Text: "预热", Caller: caller}); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		for range benchQuestions {
			q := c.questions[i%len(c.questions)]
			i++
			t := time.Now()
			if _, err := k.Search(ctx, Query{Text: q, Caller: caller, K: 5}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
	}
	reportPercentiles(b, lat)
}

// BenchmarkRank is the ranking alone (access filter, postings, BM25, the
// best K) over the in-memory index, without SQLite, for the same caller
// and questions as BenchmarkSearch. It reports CPU time per question,
// which a machine shared with other work disturbs less than wall-clock
// latency: the figure to compare index layouts by.
func BenchmarkRank(b *testing.B) {
	k := benchKB(b)
	c := loadBenchCorpus(b)
	x, err := k.loadIndex(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	caller := Caller{Principals: []Principal{"role:hr"}, Clearance: Internal}
	var qs [][]string
	for _, q := range c.questions {
		if terms, err := queryTerms(q); err == nil {
			qs = append(qs, terms)
		}
	}
	var lat []time.Duration
	i := 0
	cpu0 := cpuTime()
	for b.Loop() {
		for range benchQuestions {
			t := time.Now()
			x.search(qs[i%len(qs)], Query{Caller: caller, K: 5})
			i++
			lat = append(lat, time.Since(t))
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(i), "cpu-ms/q")
	reportPercentiles(b, lat)
}

// benchQuestions is how many questions one iteration of BenchmarkSearch
// asks (a thirtieth of it for BenchmarkRawFTS5, which is much slower).
const benchQuestions = 300

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}

// BenchmarkRawFTS5 runs the same questions against SQLite FTS5 used
// directly on the same chunks (pre-tokenized the same way, bm25 ranking,
// no access control): the engine this package does not use, for the ratio.
func BenchmarkRawFTS5(b *testing.B) {
	k := benchKB(b)
	c := loadBenchCorpus(b)
	path := filepath.Join(benchDir, "fts5.db")
	db, err := driver.Open("file:"+path, func(c *sqlite3.Conn) error { return fts5.Register(c) })
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'f'`).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n == 0 {
		tx, _ := db.Begin()
		tx.Exec(`CREATE VIRTUAL TABLE f USING fts5(body, tokenize = 'ascii')`)
		rows, err := k.db.Query(`SELECT id, text FROM chunks`)
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			var id int64
			var text string
			rows.Scan(&id, &text)
			if _, err := tx.Exec(`INSERT INTO f (rowid, body) VALUES (?, ?)`, id, strings.Join(Tokens(text), " ")); err != nil {
				b.Fatal(err)
			}
		}
		rows.Close()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	stmt, err := db.Prepare(`SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT 5`)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		for range benchQuestions / 30 {
			terms, _ := queryTerms(c.questions[i%len(c.questions)])
			i++
			expr := `"` + strings.Join(terms, `" OR "`) + `"`
			t := time.Now()
			rows, err := stmt.Query(expr)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
	}
	reportPercentiles(b, lat)
}
