#!/usr/bin/env bash
# Copy-in of a signed bundle (>= 1 GiB) into an fscrypt store made by
# qwen-appliance, against `cp` of the same files into a directory encrypted
# by Debian's fscrypt tool with the same policy (v2, AES-256-XTS/AES-256-CTS,
# padding 32), and `cp` into a plain directory of the same filesystem. Every
# path ends synced (copy-in fsyncs each file; cp is followed by syncfs). The
# copy-in also hashes every chunk and checks the signed manifest in the same
# pass. Prints the kernel's AES driver, MB/s and ratios. Root only; skips
# when a tool is missing. Bounded: about 2 minutes at 60 MB/s.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${SIZE_MIB:-1024}   # bundle size
ROUNDS=${ROUNDS:-2}          # best of ROUNDS per path

skip() { echo "storage bench: SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (loop device, mount, fscrypt keys)"
for t in fscrypt mkfs.ext4 losetup mount; do
  command -v "$t" >/dev/null || skip "$t is missing (apt-get install fscrypt e2fsprogs util-linux)"
done
[ ! -e /etc/fscrypt.conf ] || skip "/etc/fscrypt.conf exists; not touching a configured fscrypt"

work=$(mktemp -d /var/tmp/qwen-storage-bench.XXXXXX)
dev=""
cleanup() {
  set +e
  [ -n "${QA:-}" ] && "$QA" storage lock --dir "$work/mnt/qstore" >/dev/null 2>&1
  mountpoint -q "$work/mnt" && umount "$work/mnt"
  [ -n "$dev" ] && losetup -d "$dev"
  rm -f /etc/fscrypt.conf
  rm -rf "$work"
}
trap cleanup EXIT

QA=${QA:-}
if [ -z "$QA" ]; then # the tree's code, built now (incremental)
  make -s build
  QA=$PWD/bin/qwen-appliance
fi

# The bundle lives outside the measured filesystem and is read from cache.
mkdir -p "$work/bundle/model"
per=$((SIZE_MIB / 4))
for i in 1 2 3 4; do
  head -c "$((per << 20))" /dev/urandom > "$work/bundle/model/shard-$i.safetensors"
done
"$QA" keys generate --out "$work/signer" >/dev/null 2>&1
"$QA" manifest create "$work/bundle" --key "$work/signer.key" >/dev/null 2>&1
bytes=$(du -sb "$work/bundle/model" | cut -f1)

# One ext4 image with the encrypt feature, holding all three destinations.
truncate -s "$((SIZE_MIB * 2 + 1024))M" "$work/fs.img"
mkfs.ext4 -q -O encrypt "$work/fs.img"
dev=$(losetup --find --show "$work/fs.img")
mkdir "$work/mnt"
mount "$dev" "$work/mnt"

# Debian's fscrypt tool, configured for exactly our policy.
cat > /etc/fscrypt.conf <<'CONF'
{
	"source": "custom_passphrase",
	"hash_costs": {"time": "1", "memory": "128", "parallelism": "1"},
	"options": {"padding": "32", "contents": "AES_256_XTS", "filenames": "AES_256_CTS", "policy_version": "2"},
	"use_fs_keyring_for_v1_policies": false,
	"allow_cross_user_metadata": false
}
CONF
fscrypt setup "$work/mnt" --quiet
mkdir "$work/mnt/ftool" "$work/mnt/plain"
head -c 32 /dev/urandom > "$work/raw.key"
fscrypt encrypt "$work/mnt/ftool" --source=raw_key --key="$work/raw.key" --name=bench --no-recovery --quiet

"$QA" storage init --dir "$work/mnt/qstore" --key-file "$work/store.key" >/dev/null 2>&1

now() { date +%s.%N; }
# Before each run: empty every destination (so free space and the dirty
# page cache start equal), let the deletions reach the disk, warm the source.
reset() {
  rm -rf "$work/mnt/qstore/"* "$work/mnt/ftool/"* "$work/mnt/plain/"*
  sync -f "$work/mnt"; fstrim "$work/mnt" 2>/dev/null || true
  cat "$work"/bundle/model/* > /dev/null
}
elapsed=""
run_qwen() {
  reset
  local t0; t0=$(now)
  "$QA" storage copy-in --bundle "$work/bundle" --dir "$work/mnt/qstore" --trust "$work/signer.pub" 2>"$work/err" \
    || { cat "$work/err" >&2; exit 1; }
  elapsed=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
}
run_cp() { # $1 = destination directory
  reset
  local t0; t0=$(now)
  cp -r "$work/bundle/model" "$1/"
  sync -f "$1"
  elapsed=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
}
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

q=""; f=""; p=""
for r in $(seq "$ROUNDS"); do
  run_qwen; q=$(best "$q" "$elapsed")
  run_cp "$work/mnt/ftool"; f=$(best "$f" "$elapsed")
  run_cp "$work/mnt/plain"; p=$(best "$p" "$elapsed")
  echo "  round $r: copy-in $q s, fscrypt-tool cp $f s, plain cp $p s (best so far)" >&2
done
run_qwen  # leave the store's copy for the byte check below
cmp -s "$work/bundle/model/shard-1.safetensors" "$work/mnt/qstore/model/shard-1.safetensors" || { echo "copy-in produced different bytes" >&2; exit 1; }

driver() { awk -v n="$1" '$1=="name" && $3==n {f=1; next} f && $1=="driver" {print $3; exit}' /proc/crypto; }
mbs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

echo "storage bench: $((bytes >> 20)) MiB in 4 files, best of $ROUNDS, ext4 on a loop device, $(nproc) CPUs, kernel $(uname -r)"
echo "  kernel AES: xts(aes) -> $(driver 'xts(aes)'), cts(cbc(aes)) -> $(driver 'cts(cbc(aes))')"
echo "  fscrypt tool policy: $(fscrypt status "$work/mnt/ftool" | awk '/^Options:/ {$1=""; print}')"
printf "  %-46s %7.2f s  %7s MB/s\n" "qwen-appliance storage copy-in (hash+verify)" "$q" "$(mbs "$q")"
printf "  %-46s %7.2f s  %7s MB/s\n" "cp into fscrypt-tool directory" "$f" "$(mbs "$f")"
printf "  %-46s %7.2f s  %7s MB/s\n" "cp into plain directory" "$p" "$(mbs "$p")"
echo "  ratio copy-in / fscrypt-tool cp: $(ratio "$q" "$f")x (target >= 0.95)"
echo "  ratio copy-in / plain cp:        $(ratio "$q" "$p")x"
echo "  load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews these figures)"
