#!/usr/bin/env bash
# make demo: the main job end to end, for real, on the tiny model the project
# generates itself, with no GPU and no network. As root it:
#   builds the tool and the CPU runtime (Ollama v0.6.5, cached),
#   bundle create demo → bundle pack (with a parity volume),
#   install into a sandbox: --root under a temporary directory, the firewall
#   inside a network namespace it creates, joined to a peer namespace that
#   plays "the internet" (its default route; the peer owns 192.0.2.1 and
#   answers there), the store on a loop-mounted ext4 image with fscrypt,
#   a chat completion through the TLS gateway with the printed admin token,
#   a knowledge base of three short Chinese policies that one role finds and
#   another cannot see,
#   verify (with an active egress probe), a backup and its restore drill,
#   then uninstall --crypto-erase,
# and tears everything down, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: it creates a network namespace and mounts an encrypted loop image (sudo make demo)" >&2
  exit 1
fi

need=()
for pair in ip:iproute2 nft:nftables mkfs.ext4:e2fsprogs losetup:util-linux curl:curl ping:iputils-ping age-keygen:age; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
if [ ${#need[@]} -gt 0 ]; then
  step "installing Debian packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "building qwen-appliance and the CPU runtime (Ollama v0.6.5, cached after the first build)"
make -s build
QA=$repo/bin/qwen-appliance
ollama=$(bash scripts/build-ollama.sh)
echo "runtime: $ollama"

work=$(mktemp -d /tmp/qwen-appliance-demo.XXXXXX)
chmod 0711 "$work" # the service user passes through to the sandbox root
ns=qa-demo-$$
inet=qa-demo-inet-$$
mnt=$work/mnt
cleanup() {
  set +e
  if [ -f "$work/root/var/lib/qwen-appliance/state.json" ]; then
    ip netns exec "$ns" "$QA" uninstall --root "$work/root" >/dev/null 2>&1
  fi
  mountpoint -q "$mnt" && umount "$mnt"
  ip netns del "$ns" 2>/dev/null
  ip netns del "$inet" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

step "connected side: a signing key, the demo bundle (generated model + runtime), packed into volumes"
"$QA" keys generate --out release --comment "demo release key"
"$QA" bundle create demo --out bundle --key release.key --artifact "ollama=file://$ollama" --allow-unpinned
"$QA" bundle pack bundle --out volumes --volume-size 16M --parity 1 --key release.key
ls -l volumes

step "isolated side: a sandbox (network namespace $ns, a peer $inet playing the internet, encrypted ext4 on a loop device)"
ip netns add "$ns"
ip netns add "$inet"
ip link add qa-demo-h netns "$ns" type veth peer name qa-demo-i netns "$inet"
ip -n "$ns" addr add 10.251.0.1/30 dev qa-demo-h
ip -n "$inet" addr add 10.251.0.2/30 dev qa-demo-i
ip -n "$inet" addr add 192.0.2.1/32 dev lo
for n in "$ns" "$inet"; do ip -n "$n" link set lo up; done
ip -n "$ns" link set qa-demo-h up
ip -n "$inet" link set qa-demo-i up
ip -n "$ns" route add default via 10.251.0.2
echo "before install, the sandbox reaches the internet:"
ip netns exec "$ns" ping -n -c 1 -W 1 192.0.2.1 | sed -n 2p
truncate -s 2G disk.img
mkfs.ext4 -q -O encrypt disk.img
mkdir -p "$mnt"
mount -o loop disk.img "$mnt"
in_ns() { ip netns exec "$ns" "$@"; }

step "install from the packed volumes (verify → preflight → harden → store → copy-in → runtime → gateway → smoke test)"
in_ns "$QA" install volumes --trust release.pub --root "$work/root" --store "$mnt/store" --probe 192.0.2.1 | tee install.out
token=$(awk '/admin token/{getline; print $1}' install.out)

step "a chat completion through the gateway (TLS, admin token)"
in_ns curl -sS --cacert "$work/root/etc/qwen-appliance/tls/ca.crt" https://127.0.0.1:8443/v1/chat/completions \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"model":"demo","max_tokens":12,"messages":[{"role":"user","content":"Hello from the air-gapped side"}]}'
echo
echo "(random weights: the text is noise; tokenization, loading and generation are real)"
echo "without a token:"
in_ns curl -sS -o /dev/null -w '  HTTP %{http_code}\n' --cacert "$work/root/etc/qwen-appliance/tls/ca.crt" https://127.0.0.1:8443/v1/models

step "knowledge base: three Chinese policies in the encrypted store, salary for role:hr only (secret), the rest for all"
cfg=$work/root/etc/qwen-appliance
log=$work/root/var/log/qwen-appliance/audit.log
kb=(--db "$mnt/store/kb/kb.db" --audit-log "$log" --audit-key "$cfg/audit.key") # the gateway's own log, while it serves
"$QA" kb ingest "${kb[@]}" "$repo/scripts/demo-kb/薪酬制度.md" --allow role:hr --class secret | sed "s|$repo/||"
"$QA" kb ingest "${kb[@]}" "$repo/scripts/demo-kb/年假制度.md" "$repo/scripts/demo-kb/报销制度.html" --allow all --class public | sed "s|$repo/||"
q='年终奖金发几个月工资？'
for who in "role:hr --clearance secret" "role:staff"; do
  echo "$q  as $who:"
  # shellcheck disable=SC2086 # $who is two flags
  "$QA" kb search "${kb[@]}" "$q" --as $who -k 2 | sed 's/^/  /'
done
echo "role:staff gets only what all may read, and no hint that a better match exists."

step "knowledge-base answers through the gateway: role:hr gets a cited answer, role:staff the not-found answer"
hr=$("$QA" tokens create --file "$cfg/tokens.json" --name hr-demo --roles hr --clearance secret 2>/dev/null)
staff=$("$QA" tokens create --file "$cfg/tokens.json" --name staff-demo --roles staff 2>/dev/null)
# No wait: the gateway looks at its token file before refusing a token it does not know.
for who in hr staff; do
  tok=$hr
  [ "$who" = staff ] && tok=$staff
  echo "$q  as a role:$who token:"
  in_ns curl -sS --cacert "$cfg/tls/ca.crt" https://127.0.0.1:8443/v1/kb/chat/completions \
    -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    -d "{\"model\":\"demo\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"$q\"}]}" |
    python3 -c 'import json, sys
a = json.load(sys.stdin)
print("  answer:", " ".join(a["choices"][0]["message"]["content"].split())[:70])
for c in a.get("citations") or []:
    print("  [%d] %s, document %d version %d, sha256 %s..." % (c["index"], c.get("heading_path") or c["title"], c["document_id"], c["version"], c["sha256"][:16]))
print("  (%d citations, %d completion tokens)" % (len(a.get("citations") or []), a["usage"]["completion_tokens"]))'
done
echo "(random weights: the hr answer's words are noise, its citations are not; the staff answer is the"
echo " gateway's own, the model was not called.) The gateway's audit chain, with the kb events in it:"
grep -o '"kind":"kb\.[a-z]*"' "$log" | sort | uniq -c | sed 's/^ */  /'
"$QA" audit verify --live --trust "$cfg/audit.pub" "$log" | sed 's/^/  /'

step "verify: the running host against what install recorded (NIST SP 800-53 mapped checks)"
in_ns "$QA" verify --root "$work/root" --trust release.pub | head -3
echo "the egress probe, with a route to 192.0.2.1 (via the peer) and the appliance's drop counter:"
in_ns "$QA" verify --root "$work/root" --trust release.pub --only network.egress-probe | sed 's/^/  /'
in_ns "$QA" verify --root "$work/root" --trust release.pub --format json | grep -E '"(id|status)"' | paste - - | sed 's/[",]//g; s/  */ /g'

step "backup (age-encrypted, signed by the audit key) and a drill on the copy"
age-keygen -o offline-id.txt 2>/dev/null # on a real site: made and kept on an offline machine
in_ns "$QA" backup create --out host.age --recipient "$(age-keygen -y offline-id.txt)" --root "$work/root"
"$QA" backup verify host.age --identity offline-id.txt --trust "$work/root/etc/qwen-appliance/audit.pub" --drill

step "status, then uninstall with crypto-erase"
in_ns "$QA" status --root "$work/root"
in_ns "$QA" uninstall --root "$work/root" --crypto-erase

echo
echo "demo finished; the sandbox is torn down."
