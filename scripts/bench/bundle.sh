#!/usr/bin/env bash
# Bundling a 2 GiB model from a local HTTP server (loopback only) against, in
# the same run, curl of the same files followed by sha256sum; then pack and
# unpack against tar of the same tree. Prints times and ratios.
#
#   scripts/bench/bundle.sh            # 2 GiB (two 1 GiB files)
#   BENCH_MIB=512 scripts/bench/bundle.sh
#
# Target: bundle create <= 1.1x the time of the download alone (hashing
# overlaps the transfer). Run twice: with the server pacing each connection
# like a network link (BENCH_RATE MiB/s, default 100), and unpaced, where
# loopback moves bytes faster than two cores can hash them twice. Needs curl, sha256sum, tar, python3 and openssl;
# skips (exit 0) without them. Cleans up its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in curl sha256sum tar python3 openssl /usr/bin/time; do
  if ! command -v "$tool" >/dev/null; then
    echo "bundle.sh: $tool not found; skipping"
    exit 0
  fi
done

mib=${BENCH_MIB:-2048}
work=$(mktemp -d "${TMPDIR:-/tmp}/qwa-bench-bundle.XXXXXX")
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

need=$(( mib * 6 + 512 ))
avail=$(df -Pm "$work" | awk 'NR==2 {print $4}')
if [ "$avail" -lt "$need" ]; then
  echo "bundle.sh: need ${need} MiB free in $work, have ${avail}; skipping"
  exit 0
fi

# The tree's code, built now (make build is incremental; a bin/ left by an
# earlier build may be stale); QWA_BIN measures another build instead.
bin=${QWA_BIN:-}
if [ -z "$bin" ]; then
  make -s build
  bin=bin/qwen-appliance
fi

now() { date +%s.%N; }
# rss FILE CMD...: run CMD, writing its peak resident set (KiB) to FILE.
rss() { local f=$1; shift; "$@"; }
if [ -x /usr/bin/time ]; then rss() { local f=$1; shift; /usr/bin/time -f %M -o "$f" "$@"; }; fi
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; } # MiB/s from MiB, start, end
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }
cputime() { local f=$1; shift; /usr/bin/time -f '%U %S' -o "$f.raw" "$@"; python3 -c "import sys; u,s=open(sys.argv[1]).read().split()[-2:]; print(f'{float(u)+float(s):.2f}')" "$f.raw" > "$f"; }
srvcpu() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$server"; }

# Two model files of mib/2 MiB each, from a 64 MiB random block (content does
# not matter: nothing is compressed).
mkdir -p "$work/srv" "$work/curl"
head -c $((64 << 20)) /dev/urandom > "$work/block"
half=$(( mib / 2 ))
for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors; do
  for _ in $(seq $(( half / 64 ))); do cat "$work/block"; done > "$work/srv/$f"
done
rm "$work/block"
sum1=$(openssl dgst -sha256 -r "$work/srv/model-00001-of-00002.safetensors" | cut -d' ' -f1)
sum2=$(openssl dgst -sha256 -r "$work/srv/model-00002-of-00002.safetensors" | cut -d' ' -f1)

# A static file server on loopback; with a rate (MiB/s per connection) it
# paces each response like a network link of that speed.
cat > "$work/serve.py" <<'PY'
import functools, http.server, sys, time
port, root, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) * 1048576
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def copyfile(self, src, dst):
        if rate <= 0:
            return super().copyfile(src, dst)
        start, sent = time.monotonic(), 0
        while True:
            b = src.read(1 << 20)
            if not b:
                return
            dst.write(b)
            sent += len(b)
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=root)).serve_forever()
PY
"$bin" keys generate --out "$work/k" >/dev/null
cat "$work"/srv/* > /dev/null # warm the page cache once
# The CPU cost of hashing every byte once, as fast as this machine does it
# (openssl uses the SHA extensions, as sha256-simd does).
cputime "$work/cpu-sha" openssl dgst -sha256 "$work"/srv/* > /dev/null
sha_pass=$(cat "$work/cpu-sha")

# compare RATE: best of three interleaved runs of curl (both files in
# parallel), curl + sha256sum, and bundle create, against a server pacing
# each connection at RATE MiB/s (0: as fast as loopback goes).
compare() {
  local rate=$1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
  python3 "$work/serve.py" "$port" "$work/srv" "$rate" &
  server=$!
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local url="http://127.0.0.1:$port"
  cat > "$work/bench.yaml" <<YAML
name: bench
version: 1
model:
  name: bench/model
  sources:
    - url: $url/model-00001-of-00002.safetensors
      sha256: $sum1
      dest: model/model-00001-of-00002.safetensors
    - url: $url/model-00002-of-00002.safetensors
      sha256: $sum2
      dest: model/model-00002-of-00002.safetensors
YAML
  local dls=() dlsums=() qas=() t0 t1 t2 t3 t4 s0 s1 s2 s3
  # CPU seconds (user+sys) of each client (/usr/bin/time) and of the
  # server (/proc/PID/stat): on a machine whose cores are all busy, wall
  # time follows CPU time.
  local cpu_dl=() cpu_qa=() srv_dl=() srv_qa=()
  for _ in 1 2 3; do
    mkdir -p "$work/curl"
    s0=$(srvcpu)
    t0=$(now)
    cputime "$work/cpu-dl" bash -c 'curl -sf -o "$1/1" "$2/model-00001-of-00002.safetensors" & curl -sf -o "$1/2" "$2/model-00002-of-00002.safetensors"; wait' _ "$work/curl" "$url"
    t1=$(now)
    s1=$(srvcpu)
    sha256sum "$work/curl/1" "$work/curl/2" > /dev/null
    t2=$(now)
    rm -rf "$work/curl" "$work/bundle"
    s2=$(srvcpu)
    t3=$(now)
    cputime "$work/cpu-qa" "$bin" bundle create --spec "$work/bench.yaml" --out "$work/bundle" --key "$work/k.key" >/dev/null
    t4=$(now)
    s3=$(srvcpu)
    dls+=("$(elapsed "$t0" "$t1")"); dlsums+=("$(elapsed "$t0" "$t2")"); qas+=("$(elapsed "$t3" "$t4")")
    cpu_dl+=("$(cat "$work/cpu-dl")"); cpu_qa+=("$(cat "$work/cpu-qa")")
    srv_dl+=("$(elapsed "$s0" "$s1")"); srv_qa+=("$(elapsed "$s2" "$s3")")
  done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  local dl dlsum qa label="loopback, unpaced"
  dl=$(best "${dls[@]}"); dlsum=$(best "${dlsums[@]}"); qa=$(best "${qas[@]}")
  [ "$rate" != 0 ] && label="each connection paced at $rate MiB/s"
  echo "== bundle create vs curl: ${mib} MiB in two files, $label"
  echo "curl (2 in parallel)            ${dl} s  ($(rate "$mib" 0 "$dl") MiB/s)   runs: ${dls[*]}"
  echo "curl + sha256sum                ${dlsum} s   runs: ${dlsums[*]}"
  echo "qwen-appliance bundle create    ${qa} s  ($(rate "$mib" 0 "$qa") MiB/s)   runs: ${qas[*]}"
  echo "ratio bundle create / curl alone:            $(ratio "$qa" "$dl")  (target <= 1.10)"
  echo "ratio bundle create / curl + sha256sum:      $(ratio "$qa" "$dlsum")"
  local cdl cqa sdl sqa
  cdl=$(median "${cpu_dl[@]}"); cqa=$(median "${cpu_qa[@]}"); sdl=$(median "${srv_dl[@]}"); sqa=$(median "${srv_qa[@]}")
  echo "CPU s (user+sys, medians)       curl ${cdl} + server ${sdl};  bundle create ${cqa} + server ${sqa}"
  echo "one SHA-256 pass over ${mib} MiB    ${sha_pass} s of CPU (openssl dgst -sha256; bundle create hashes each byte once)"
}
compare "${BENCH_RATE:-100}"
compare 0
rm -rf "$work/srv"

echo "== pack and unpack vs tar (same tree)"
t0=$(now)
tar -cf "$work/ref.tar" -C "$work/bundle" .
t1=$(now)
rss "$work/rss-pack" "$bin" bundle pack "$work/bundle" --out "$work/vols" --volume-size 512M --key "$work/k.key" >/dev/null
t2=$(now)
pt=$(elapsed "$t0" "$t1"); pq=$(elapsed "$t1" "$t2")
echo "tar -cf                         ${pt} s"
echo "bundle pack (512M volumes)      ${pq} s  (checks every file against the manifest while archiving)"
echo "ratio pack / tar:                            $(ratio "$pq" "$pt")"
[ -s "$work/rss-pack" ] && echo "bundle pack max RSS             $(( $(cat "$work/rss-pack") / 1024 )) MiB"

mkdir "$work/ref"
t0=$(now)
tar -xf "$work/ref.tar" -C "$work/ref"
t1=$(now)
rm -rf "$work/ref" "$work/ref.tar"
rss "$work/rss-unpack" "$bin" bundle unpack "$work/vols" --out "$work/unpacked" --trust "$work/k.pub" >/dev/null
t2=$(now)
ut=$(elapsed "$t0" "$t1"); uq=$(elapsed "$t1" "$t2")
echo "tar -xf                         ${ut} s"
echo "bundle unpack                   ${uq} s  (hashes every volume, then every file while extracting)"
echo "ratio unpack / tar:                          $(ratio "$uq" "$ut")"
[ -s "$work/rss-unpack" ] && echo "bundle unpack max RSS           $(( $(cat "$work/rss-unpack") / 1024 )) MiB  (for a ${mib} MiB bundle: memory does not grow with it)"

"$bin" bundle pack "$work/bundle" --out "$work/vols-par" --volume-size 512M --parity 2 --key "$work/k.key" >/dev/null &&
  t3=$(now) && echo "bundle pack --parity 2          $(elapsed "$t2" "$t3") s"
