# Shared by the benchmark scripts (sourced, not run: make bench runs only
# scripts/bench/*.sh).

# start_work NAME: a new temporary directory $work, removed when the script
# exits, after every process whose PID the script added to the array pids
# is killed.
start_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  pids=()
  trap stop_work EXIT
}
stop_work() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# build_gateway_tools: qwen-appliance, the test upstream and loadgen, built
# into $work.
build_gateway_tools() {
  go build -o "$work/qwen-appliance" ./cmd/qwen-appliance
  go build -o "$work/upstream" ./gateway/internal/testupstream
  go build -o "$work/loadgen" ./gateway/internal/loadgen
}

# port: a free TCP port on loopback.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: wait until something listens on 127.0.0.1:PORT.
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 did not open" >&2; exit 1; }

# fake_install BIN WORK MIB: a fake installation under WORK/root for backup
# create: a state record, the audit key, and a real signed hash chain of MIB
# MiB written by scripts/bench/auditgen with the gateway's audit package, so
# verify checks it, and a TLS CA and token file, which a drill checks. Sets
# root, cfg, logdir (the installation), recipient (an age recipient whose
# identity is WORK/id.txt) and WORK/sig.key, the backup signing key.
# QWA_AUDITGEN: a built auditgen, for a host without Go.
fake_install() {
  local bin=$1 work=$2 mib=$3
  root=$work/root
  cfg=$root/etc/qwen-appliance
  logdir=$root/var/log/qwen-appliance
  mkdir -p "$cfg" "$logdir" "$root/var/lib/qwen-appliance"
  "$bin" keys generate --out "$cfg/audit" >/dev/null
  "$bin" keys generate --out "$work/sig" >/dev/null
  "$bin" tls init --dir "$cfg/tls" --host qwen.local >/dev/null
  "$bin" tokens create --file "$cfg/tokens.json" --name bench --role admin >/dev/null 2>&1
  age-keygen -o "$work/id.txt" 2>/dev/null
  recipient=$(age-keygen -y "$work/id.txt")
  cat > "$root/var/lib/qwen-appliance/state.json" <<JSON
{"schemaVersion":1,"updated":"2026-01-01T00:00:00Z","root":"$root",
 "bundle":{"name":"bench","version":1,"manifestSha256":"","dir":""},
 "lastAcceptedVersion":1,"store":{"dir":"","backend":"none"},"firewall":{"table":"","rulesetSha256":""},
 "runtime":{"name":"runtime"},"gateway":{"name":"gateway","auditLog":"$logdir/audit.log"}}
JSON
  echo "writing a ${mib} MiB audit log" >&2
  ${QWA_AUDITGEN:-go run ./scripts/bench/auditgen} -out "$logdir/audit.log" -key "$cfg/audit.key" -mib "$mib"
}
