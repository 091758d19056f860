#!/bin/sh
# Knowledge-base benchmarks: ingest rate, index build, search, ranking alone (CPU per
# question) and answer-prompt p50/p99 at about 100,000 chunks, and SQLite FTS5 used
# directly on the same chunks.
# KB_BENCH_CHUNKS changes the corpus size. Takes several minutes.
set -eu
cd "$(dirname "$0")/../.."
export KB_BENCH_CHUNKS="${KB_BENCH_CHUNKS:-100000}"
go test ./kb -run '^$' -bench '^(BenchmarkIngest|BenchmarkIndexBuild|BenchmarkSearch|BenchmarkRank|BenchmarkBuildPrompt|BenchmarkRawFTS5)$' \
	-benchtime "${KB_BENCH_TIME:-1x}" -count 1 -timeout 60m "$@"
