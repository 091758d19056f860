#!/usr/bin/env bash
# backup create of an installation with a large audit log (default 1 GiB)
# against, in the same run, `tar -c | age -r` of the same files; then
# backup verify, and backup verify --drill (which also restores into a
# scratch root and checks it), against `age -d | tar -x`. Prints times and
# ratios. Then BenchmarkVerify (package backup) on an archive of the same
# size splits verify's time: age -d | tar -x, extract (decrypt, write, hash
# every member, check the signature: what tar does, and the hashes), verify
# (that and the audit chain), drill. BENCH_GO=0 skips that part.
#
#   scripts/bench/backup.sh              # 1 GiB audit log
#   BENCH_MIB=256 scripts/bench/backup.sh
#
# Target (issue 18): backup create at >= 0.9x the speed of tar | age, i.e.
# ratio = t(tar|age) / t(create) >= 0.9; the same for verify against
# age -d | tar -x (verify also hashes every member and checks the audit
# chain, which tar does not). The installation is a fake one: a state record, keys, and a real
# signed audit chain written by scripts/bench/auditgen with the gateway's
# audit package. Needs go, age, age-keygen, tar and python3; skips (exit 0)
# without them. Cleans up its temporary directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in age age-keygen tar python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "backup.sh: $tool not found; skipping"
    exit 0
  fi
done

mib=${BENCH_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/qwa-bench-backup.XXXXXX")
trap 'rm -rf "$work"' EXIT
need=$(( mib * 5 + 256 ))
avail=$(df -Pm "$work" | awk 'NR==2 {print $4}')
if [ "$avail" -lt "$need" ]; then
  echo "backup.sh: need ${need} MiB free in $work, have ${avail}; skipping"
  exit 0
fi

if [ -n "${QWA_BIN:-}" ]; then
  bin=$QWA_BIN
else
  make -s build
  bin=bin/qwen-appliance
fi

# shellcheck source=lib/common.bash
. scripts/bench/lib/common.bash
fake_install "$bin" "$work" "$mib"

# t CMD...: run CMD (stdout discarded) and print its wall time; exit on failure.
t() {
  local s e
  s=$(date +%s.%N)
  if ! "$@" >/dev/null; then echo "backup.sh: failed: $*" >&2; exit 1; fi
  e=$(date +%s.%N)
  python3 -c "print(f'{$e-$s:.2f}')"
}
# Each pair runs BENCH_REPS times (default 3), alternating, and the median
# of each is reported: on a shared machine the load changes from one
# second to the next.
reps=${BENCH_REPS:-3}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
c=() ta=() v=() u=() d=()
for i in $(seq "$reps"); do
  rm -f "$work/a.age" "$work/b.age"
  sync
  c+=("$(t "$bin" backup create --out "$work/a.age" --recipient "$recipient" --key "$work/sig.key" --root "$root" --metrics-textfile none)")
  sync
  ta+=("$(t sh -c "tar -C '$root' -cf - etc var | age -r '$recipient' > '$work/b.age'")")
  sync
  v+=("$(t "$bin" backup verify "$work/a.age" --identity "$work/id.txt" --trust "$work/sig.pub")")
  rm -rf "$work/x"; mkdir "$work/x"
  u+=("$(t sh -c "age -d -i '$work/id.txt' '$work/b.age' | tar -C '$work/x' -xf -")")
  rm -rf "$work/x"
  sync
  d+=("$(t "$bin" backup verify "$work/a.age" --identity "$work/id.txt" --trust "$work/sig.pub" --drill --scratch "$work")")
done
t_create=$(median "${c[@]}") t_tar=$(median "${ta[@]}") t_verify=$(median "${v[@]}") t_untar=$(median "${u[@]}") t_drill=$(median "${d[@]}")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "audit log ${mib} MiB, median of ${reps} runs each (create ${c[*]}; tar|age ${ta[*]}; verify ${v[*]}; age|tar ${u[*]}; drill ${d[*]})"
echo "backup create      ${t_create}s   tar -c | age -r   ${t_tar}s     ratio $(ratio "$t_tar" "$t_create") (target >= 0.90)"
echo "backup verify      ${t_verify}s   age -d | tar -x   ${t_untar}s   ratio $(ratio "$t_untar" "$t_verify") (target >= 0.90)"
echo "verify --drill     ${t_drill}s   age -d | tar -x   ${t_untar}s   ratio $(ratio "$t_untar" "$t_drill") (restore into a scratch root; target >= 0.90)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
rm -rf "$work/root" "$work"/*.age

if [ "${BENCH_GO:-1}" != 0 ]; then
  echo "BenchmarkVerify, ${mib} MiB audit log:"
  QWA_BENCH_MIB=$mib TMPDIR=$work go test ./backup -run '^$' -bench '^BenchmarkVerify$' -benchtime "${reps}x" -count 1 | grep '^Benchmark'
fi
