#!/usr/bin/env bash
# harden apply against nft -f: the same ruleset (20 client CIDRs, 40 egress
# entries), applied N times alternating between two policies so every apply
# is a real change, in a throwaway network namespace (unshare --net: it goes
# away with the process). Both sides are whole CLI runs: process start, read
# the ruleset, one atomic batch. Prints ms per apply and the ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then echo "harden bench: skipped (needs root for a network namespace)"; exit 0; fi
for t in nft unshare; do
  command -v "$t" >/dev/null || { echo "harden bench: skipped ($t not installed)"; exit 0; }
done
# The tree's code, built now (incremental); BIN measures another build.
if [ -z "${BIN:-}" ]; then make -s build; BIN=bin/qwen-appliance; fi
BIN=$(realpath "$BIN")
N=${N:-40}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export BIN N tmp

exec unshare --net bash -euo pipefail -c '
args=(--root "$tmp/r")
for i in $(seq 1 20); do args+=(--allow-cidr "10.$i.0.0/16"); done
for i in $(seq 1 40); do args+=(--allow-egress "udp:192.168.$i.1:123"); done
"$BIN" harden apply "${args[@]}" --api-port 8443 >/dev/null
cp "$tmp/r/etc/qwen-appliance/nftables.conf" "$tmp/a.nft"
"$BIN" harden apply "${args[@]}" --api-port 9443 >/dev/null
cp "$tmp/r/etc/qwen-appliance/nftables.conf" "$tmp/b.nft"
rules=$(nft list table inet qwen_appliance | grep -c accept)

now() { date +%s%N; }
t0=$(now)
for i in $(seq 1 "$N"); do "$BIN" harden apply "${args[@]}" --api-port $((8443 + 1000 * (i % 2))) >/dev/null; done
t1=$(now)
for i in $(seq 1 "$N"); do if [ $((i % 2)) = 0 ]; then nft -f "$tmp/a.nft"; else nft -f "$tmp/b.nft"; fi; done
t2=$(now)
for i in $(seq 1 "$N"); do "$BIN" harden apply --dry-run "${args[@]}" >/dev/null; done
t3=$(now)
"$BIN" harden status --root "$tmp/r" >/dev/null
awk -v rules="$rules" -v n="$N" -v qa=$((t1 - t0)) -v nf=$((t2 - t1)) -v dry=$((t3 - t2)) "BEGIN {
  printf \"harden bench: %d rules, %d applies each\\n\", rules, n
  printf \"  qwen-appliance harden apply: %6.2f ms/apply (CAS batch, then rules file, unit and state written with fsync)\\n\", qa / n / 1e6
  printf \"  qwen-appliance --dry-run:    %6.2f ms/run (process start and rendering only)\\n\", dry / n / 1e6
  printf \"  nft -f (same rules file):    %6.2f ms/apply\\n\", nf / n / 1e6
  printf \"  ratio harden/nft: %.2f\\n\", qa / nf
}"
'
