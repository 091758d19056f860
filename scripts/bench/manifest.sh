#!/usr/bin/env bash
# Hashing benchmark for issue 2: qwen-appliance manifest create/verify against
# sha256sum and openssl on the same files, in the same run, from page cache.
#   BENCH_SIZE   size of the single large file (default 2G)
#   BENCH_DIR    where to put the files (default a temp dir under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The tree's code, built now (incremental); QA measures another build.
if [ -z "${QA:-}" ]; then make -s build; QA=bin/qwen-appliance; fi
size=${BENCH_SIZE:-2G}
cores=$(nproc)
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/qa-bench-manifest.XXXXXX")
trap 'rm -rf "$work"' EXIT

bytes() { numfmt --from=iec "$1"; }
now() { date +%s.%N; }
# rate BYTES SECONDS -> MB/s
rate() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/s/1e6}'; }
timeit() { local s e; s=$(now); "$@" >/dev/null; e=$(now); awk -v s="$s" -v e="$e" 'BEGIN{printf "%.3f", e-s}'; }

echo "generating: one $size file, 8 small files, $cores files of $size/$cores each ($(nproc) cores)"
mkdir -p "$work/single" "$work/multi"
head -c "$(bytes "$size")" /dev/urandom > "$work/single/model.bin"
for i in $(seq 1 8); do head -c 4M /dev/urandom > "$work/single/small-$i.json"; done
part=$(( $(bytes "$size") / cores ))
for i in $(seq 1 "$cores"); do head -c "$part" /dev/urandom > "$work/multi/shard-$i.bin"; done
"$QA" keys generate --out "$work/k" >/dev/null
cat "$work"/single/* "$work"/multi/* > /dev/null   # warm the page cache

single=$(du -sb "$work/single" | cut -f1)
multi=$(du -sb "$work/multi" | cut -f1)

t_sha=$(timeit sha256sum "$work"/single/*)
t_ossl=$(timeit openssl dgst -sha256 "$work"/single/*)
t_qa=$(timeit "$QA" manifest create "$work/single" --key "$work/k.key" --name bench)
t_qv=$(timeit "$QA" manifest verify "$work/single" --trust "$work/k.pub")
t_ossl_m=$(timeit openssl dgst -sha256 "$work"/multi/*)
t_qa_m=$(timeit "$QA" manifest create "$work/multi" --key "$work/k.key" --name bench)
t_qv_m=$(timeit "$QA" manifest verify "$work/multi" --trust "$work/k.pub")

printf '\n%-44s %8s %10s %12s\n' "set / tool" "seconds" "MB/s" "vs openssl"
row() { printf '%-44s %8s %10s %12s\n' "$1" "$2" "$(rate "$3" "$2")" "$(awk -v a="$4" -v b="$2" 'BEGIN{printf "%.2fx", a/b}')"; }
row "one large + 8 small: sha256sum" "$t_sha" "$single" "$t_ossl"
row "one large + 8 small: openssl dgst -sha256" "$t_ossl" "$single" "$t_ossl"
row "one large + 8 small: manifest create" "$t_qa" "$single" "$t_ossl"
row "one large + 8 small: manifest verify" "$t_qv" "$single" "$t_ossl"
row "$cores large: openssl dgst -sha256" "$t_ossl_m" "$multi" "$t_ossl_m"
row "$cores large: manifest create" "$t_qa_m" "$multi" "$t_ossl_m"
row "$cores large: manifest verify" "$t_qv_m" "$multi" "$t_ossl_m"
echo
echo "create hashes each byte once (the chunk proofs are the whole-file SHA-256's chaining values);"
echo "verify hashes each byte once (the signed chunk proofs prove the file), spread over all cores."
echo "ideal for $cores cores: ${cores}.00x openssl on the multi-file set"
