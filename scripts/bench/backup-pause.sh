#!/usr/bin/env bash
# Does taking a backup pause serving? The gateway serves /v1/models at a fixed
# rate (open loop, gateway/internal/loadgen) and writes its audit log into a
# fake installation; the latencies of one run without a backup and one run
# while `backup create` of that installation (its audit log included, default
# 256 MiB) runs again and again are printed side by side, with the number of
# backups taken. Loopback only. Needs go, age-keygen and python3; skips
# (exit 0) without them. Cleans up its temporary directory.
#
#   scripts/bench/backup-pause.sh
#   BENCH_MIB=64 RATE=500 DUR=10 scripts/bench/backup-pause.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in age-keygen python3; do
  if ! command -v "$tool" >/dev/null; then echo "backup-pause.sh: $tool not found; skipping"; exit 0; fi
done
mib=${BENCH_MIB:-256}
RATE=${RATE:-500}
DUR=${DUR:-10}

# shellcheck source=lib/common.bash
. scripts/bench/lib/common.bash
start_work qwa-bench-pause
build_gateway_tools
Q=$work/qwen-appliance
fake_install "$Q" "$work" "$mib"

UP=$(port); "$work/upstream" -listen 127.0.0.1:"$UP" >/dev/null & pids+=($!)
wait_port "$UP"
TOKEN=$("$Q" tokens create --file "$cfg/tokens.json" --name bench 2>/dev/null)
GW=$(port)
# The gateway appends to the installation's audit log, which the backups copy.
"$Q" serve --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$GW" --metrics-listen "" \
  --tokens "$cfg/tokens.json" --audit-log "$logdir/audit.log" --audit-key "$cfg/audit.key" 2>"$work/serve.log" & pids+=($!)
wait_port "$GW"

load() { "$work/loadgen" -url "http://127.0.0.1:$GW/v1/models" -token "$TOKEN" -rate "$RATE" -duration "${DUR}s"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]])" "$1"; }

quiet=$(load)
rm -f "$work/stop"
( n=0; while [ ! -e "$work/stop" ]; do
    "$Q" backup create --out "$work/b$n.age" --recipient "$recipient" --key "$work/sig.key" --root "$root" --metrics-textfile none >/dev/null 2>&1 || { echo "backup-pause.sh: backup create failed" >&2; exit 1; }
    rm -f "$work/b$n.age"; n=$((n + 1)); echo "$n" > "$work/count"
  done ) & bpid=$!
sleep 0.5
busy=$(load)
touch "$work/stop"; wait "$bpid"
printf '%-26s %9s %9s %9s %7s\n' "" p50-ms p99-ms max-ms errors
for name in quiet busy; do
  out=${!name}
  printf '%-26s %9s %9s %9s %7s\n' "$name$([ "$name" = busy ] && echo " ($(cat "$work/count") backups)")" \
    "$(json p50ms <<<"$out")" "$(json p99ms <<<"$out")" "$(json maxms <<<"$out")" "$(json errors <<<"$out")"
done
echo "(${RATE} req/s for ${DUR} s each; audit log ${mib} MiB; $(nproc) cores shared by the gateway, the load and the backups)"
