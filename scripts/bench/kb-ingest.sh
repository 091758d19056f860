#!/bin/bash
# Knowledge-base ingest of a large folder: peak memory against corpus size.
# Writes KB_INGEST_MIB (default 1024) MiB of Chinese Markdown under a temp
# folder (removed afterwards), ingests it with the real CLI, samples the
# process's resident memory as the files go in, and prints the peak
# (getrusage, as /usr/bin/time reports it) and the rate. Then, unless
# KB_INGEST_SEARCH=0, runs one search, which builds the in-memory term
# index over every chunk: that memory does grow with the corpus (see
# docs/kb-formats.md). The 1 GiB run takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
mib="${KB_INGEST_MIB:-1024}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/qwa-kb-ingest.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/qwen-appliance" ./cmd/qwen-appliance
go run ./scripts/bench/kbcorpus -out "$tmp/docs" -mib "$mib"
files=$(find "$tmp/docs" -type f | wc -l)
bytes=$(du -sb "$tmp/docs" | cut -f1)
echo "corpus: $files files, $((bytes >> 20)) MiB"

# rss PID: the process's resident and peak resident memory, in MiB.
rss() { awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{printf "%d %d", r/1024, h/1024}' "/proc/$1/status" 2>/dev/null || true; }

start=$(date +%s.%N)
/usr/bin/time -f '%M %e' -o "$tmp/time" "$tmp/qwen-appliance" kb ingest "$tmp/docs" --db "$tmp/kb/kb.db" --audit-log '' \
	--allow all --class public >"$tmp/out" 2>"$tmp/err" &
timepid=$!
sleep 0.5
pid=$(pgrep -P "$timepid" || true)
next=10
printf '%8s %10s %10s %10s\n' "files%" "MiB in" "RSS MiB" "peak MiB"
while kill -0 "$timepid" 2>/dev/null; do
	done_files=$(wc -l <"$tmp/out")
	pct=$((100 * done_files / files))
	if [ "$pct" -ge "$next" ] && [ -n "$pid" ]; then
		read -r r h <<<"$(rss "$pid")"
		printf '%8s %10s %10s %10s\n' "$pct" "$((bytes * done_files / files >> 20))" "${r:-?}" "${h:-?}"
		next=$((next + 10))
	fi
	sleep 1
done
wait "$timepid" || { echo "ingest failed:"; tail -5 "$tmp/err"; exit 1; }
read -r peak secs <"$tmp/time"
printf 'ingest: %d MiB in %.1f s = %.1f MB/s of files, peak RSS %d MiB (%.3f of the corpus size)\n' \
	"$((bytes >> 20))" "$secs" "$(echo "$bytes / $secs / 1000000" | bc -l)" "$((peak / 1024))" "$(echo "$peak * 1024 / $bytes" | bc -l)"
echo "database: $(du -sh "$tmp/kb" | cut -f1)"

if [ "${KB_INGEST_SEARCH:-1}" = 1 ]; then
	/usr/bin/time -f '%M %e' -o "$tmp/time" "$tmp/qwen-appliance" kb search "战国无双的开发商是谁" --db "$tmp/kb/kb.db" \
		--audit-log '' --as role:bench -k 3 >/dev/null
	read -r peak secs <"$tmp/time"
	chunks=$(grep -o '[0-9]* chunks' "$tmp/out" | awk '{s+=$1} END{print s}')
	printf 'first search (builds the index over %d chunks): %.1f s, peak RSS %d MiB (%d bytes per chunk)\n' \
		"$chunks" "$secs" "$((peak / 1024))" "$((peak * 1024 / chunks))"
fi
