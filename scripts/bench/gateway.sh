#!/usr/bin/env bash
# Gateway benchmark: the same load, in the same run, against (a) the upstream
# directly, (b) qwen-appliance serve in front of it, (c) nginx proxy_pass in
# front of it; over plain HTTP and over TLS (b and c). Loopback only.
# Reports added latency p50/p99 at a fixed rate (open-loop, our loadgen),
# highest requests/s (wrk), the proxy's CPU time per request during that wrk
# run (utime+stime from /proc, nginx summed over its workers; for "direct",
# the upstream's own), streamed tokens/s (loadgen stream mode), and the
# serve/nginx throughput and CPU ratios. Skips when wrk or nginx is missing.
# On a small machine wrk, the upstream and the proxy share the cores, so
# CPU per request is the figure that carries over to a bigger one.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in wrk nginx openssl python3; do
  if ! command -v "$tool" >/dev/null; then echo "gateway bench: $tool not installed; skipping"; exit 0; fi
done
RATE=${RATE:-1000}      # requests per second for the latency runs
DUR=${DUR:-3}           # seconds per run
ROUNDS=${ROUNDS:-3}     # runs per target; medians are reported
CONNS=${CONNS:-16}      # wrk connections

# shellcheck source=lib/common.bash
. scripts/bench/lib/common.bash
start_work qwa-bench-gateway
build_gateway_tools

UP=$(port); "$work/upstream" -listen 127.0.0.1:"$UP" >/dev/null & pids+=($!)
wait_port "$UP"

Q="$work/qwen-appliance"
TOKEN=$("$Q" tokens create --file "$work/tokens.json" --name bench 2>/dev/null)
"$Q" keys generate --out "$work/audit" >/dev/null 2>&1 || true
"$Q" tls init --dir "$work/tls" --host 127.0.0.1 >/dev/null
AUDITKEY=()
[ -f "$work/audit.key" ] && AUDITKEY=(--audit-key "$work/audit.key")

GW=$(port); GWS=$(port)
"$Q" serve --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$GW" --metrics-listen "" \
  --tokens "$work/tokens.json" --audit-log "$work/audit.log" "${AUDITKEY[@]}" --max-concurrent 1024 2>"$work/serve.log" & pids+=($!)
SERVE_PID=$!
"$Q" serve --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$GWS" --metrics-listen "" \
  --tokens "$work/tokens.json" --audit-log "$work/audit-tls.log" "${AUDITKEY[@]}" --max-concurrent 1024 \
  --tls-cert "$work/tls/server.crt" --tls-key "$work/tls/server.key" 2>"$work/serve-tls.log" & pids+=($!)
SERVE_TLS_PID=$!

NG=$(port); NGS=$(port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  upstream model { server 127.0.0.1:$UP; keepalive 256; }
  server {
    listen 127.0.0.1:$NG;
    listen 127.0.0.1:$NGS ssl;
    ssl_certificate $work/tls/server.crt; ssl_certificate_key $work/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://model; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & pids+=($!)
NGINX_PID=$!
for p in "$GW" "$GWS" "$NG" "$NGS"; do wait_port "$p"; done
UP_PID=${pids[0]}

declare -A URL=(
  [direct]="http://127.0.0.1:$UP" [serve]="http://127.0.0.1:$GW" [nginx]="http://127.0.0.1:$NG"
  [serve-tls]="https://127.0.0.1:$GWS" [nginx-tls]="https://127.0.0.1:$NGS"
)
order=(direct serve nginx serve-tls nginx-tls)
STREAM_BODY='{"model":"qwen","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}'

# cputicks PID...: utime+stime of the processes, in clock ticks.
cputicks() { local t=0 f; for p in "$@"; do read -r -a f <"/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }
declare -A PROCS=([direct]="$UP_PID" [serve]="$SERVE_PID" [serve-tls]="$SERVE_TLS_PID")
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d[sys.argv[1]])" "$1"; }
median() { python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
# Targets are measured round-robin, ROUNDS times, and the median is kept: on
# a shared machine, load from elsewhere then hits every target alike.
declare -A P50 P99 RPS TPS CPU
for round in $(seq "$ROUNDS"); do
  for name in "${order[@]}"; do
    u=${URL[$name]}
    out=$("$work/loadgen" -url "$u/v1/models" -token "$TOKEN" -rate "$RATE" -duration "${DUR}s")
    P50[$name]+=" $(json p50ms <<<"$out")"; P99[$name]+=" $(json p99ms <<<"$out")"
    errs=$(json errors <<<"$out"); [ "$errs" = 0 ] || echo "warning: $name round $round: $errs errors at $RATE req/s" >&2
    procs=${PROCS[$name]:-$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')}
    t0=$(cputicks $procs)
    out=$(wrk -t2 -c"$CONNS" -d"${DUR}s" -H "Authorization: Bearer $TOKEN" "$u/v1/models")
    t1=$(cputicks $procs)
    RPS[$name]+=" $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    CPU[$name]+=" $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '/requests in/ {print t / hz * 1e6 / $1}' <<<"$out")"
    TPS[$name]+=" $("$work/loadgen" -url "$u/v1/chat/completions" -token "$TOKEN" -body "$STREAM_BODY" -streams 8 -duration "${DUR}s" | json tokensPerSec)"
  done
done
for name in "${order[@]}"; do
  P50[$name]=$(median ${P50[$name]}); P99[$name]=$(median ${P99[$name]})
  RPS[$name]=$(median ${RPS[$name]}); TPS[$name]=$(median ${TPS[$name]}); CPU[$name]=$(median ${CPU[$name]})
done

printf '\ngateway benchmark (loopback, %s req/s open-loop for latency, wrk -c%s for throughput, median of %s x %ss runs, %s cores, load %s)\n' "$RATE" "$CONNS" "$ROUNDS" "$DUR" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %9s %9s %10s %10s %12s %12s %12s\n' target p50_ms p99_ms added_p50 added_p99 max_req/s cpu_us/req stream_tok/s
for name in "${order[@]}"; do
  base=direct
  printf '%-10s %9.3f %9.3f %10.3f %10.3f %12.0f %12.1f %12.0f\n' "$name" "${P50[$name]}" "${P99[$name]}" \
    "$(python3 -c "print(${P50[$name]}-${P50[$base]})")" "$(python3 -c "print(${P99[$name]}-${P99[$base]})")" \
    "${RPS[$name]}" "${CPU[$name]}" "${TPS[$name]}"
done
python3 - "${RPS[serve]}" "${RPS[nginx]}" "${RPS[serve-tls]}" "${RPS[nginx-tls]}" \
  "${CPU[serve]}" "${CPU[nginx]}" "${CPU[serve-tls]}" "${CPU[nginx-tls]}" <<'PY'
import sys
s, n, st, nt, cs, cn, cst, cnt = map(float, sys.argv[1:])
print(f"throughput ratio serve/nginx: plain {s/n:.2f}, TLS {st/nt:.2f} (target >= 1.00)")
print(f"CPU per request serve/nginx: plain {cs/cn:.2f}x, TLS {cst/cnt:.2f}x")
PY
echo "targets: added p50 <= 0.3 ms, added p99 <= 2 ms at 1000 req/s"
