package kb

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkBuildPrompt reports p50 and p99 of what a knowledge-base answer
// adds before the first upstream byte, on the benchmark corpus (about
// KB_BENCH_CHUNKS chunks, default 100,000; lexical only): retrieval with
// access filtering, the relevance check, and laying out the numbered
// blocks within the budget of a 32K-token context. Run it with
// scripts/bench/kb.sh BenchmarkBuildPrompt.
func BenchmarkBuildPrompt(b *testing.B) {
	k := benchKB(b)
	c := loadBenchCorpus(b)
	caller := Caller{Principals: []Principal{"role:hr"}, Clearance: Internal}
	ctx := context.Background()
	o := PromptOptions{ContextTokens: 32768, ReserveTokens: 1024}
	if _, err := k.BuildPrompt(ctx, caller, []Turn{{Role: "user", Text: "预热"}}, o); err != nil {
		b.Fatal(err)
	}
	// The same questions through Search alone (K 8), interleaved, so that
	// a run on a busy machine still shows what the prompt adds to retrieval.
	var lat, searchLat []time.Duration
	blocks, notFound, i := 0, 0, 0
	for b.Loop() {
		for range benchQuestions {
			q := c.questions[i%len(c.questions)]
			i++
			t := time.Now()
			p, err := k.BuildPrompt(ctx, caller, []Turn{{Role: "user", Text: q}}, o)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
			t = time.Now()
			if _, err := k.Search(ctx, Query{Text: q, Caller: caller, K: DefaultK}); err != nil {
				b.Fatal(err)
			}
			searchLat = append(searchLat, time.Since(t))
			blocks += len(p.Citations)
			if p.NotFound != "" {
				notFound++
			}
		}
	}
	reportPercentiles(b, lat)
	slices.Sort(searchLat)
	b.ReportMetric(float64(searchLat[len(searchLat)/2].Microseconds())/1000, "search-p50-ms")
	b.ReportMetric(float64(searchLat[int(0.99*float64(len(searchLat)-1))].Microseconds())/1000, "search-p99-ms")
	b.ReportMetric(float64(blocks)/float64(len(lat)), "blocks/q")
	b.ReportMetric(float64(notFound)/float64(len(lat)), "notfound/q")
}
