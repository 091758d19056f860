#!/usr/bin/env bash
# backup create of an installation with a large audit log (default 1 GiB)
# against, in the same run, `tar -c | age -r` of the same files; then
# backup verify against `age -d | tar -x`. Prints times and ratios.
#
#   scripts/bench/backup.sh              # 1 GiB audit log
#   BENCH_MIB=256 scripts/bench/backup.sh
#
# Target (issue 18): backup create at >= 0.9x the speed of tar | age, i.e.
# ratio = t(tar|age) / t(create) >= 0.9; the same for verify against
# age -d | tar -x (verify also hashes every member and checks the audit
# chain). The installation is a fake one: a state record, keys, and a real
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
sync
t_create=$(t "$bin" backup create --out "$work/a.age" --recipient "$recipient" --key "$work/sig.key" --root "$root" --metrics-textfile none)
sync
t_tar=$(t sh -c "tar -C '$root' -cf - etc var | age -r '$recipient' > '$work/b.age'")
sync
t_verify=$(t "$bin" backup verify "$work/a.age" --identity "$work/id.txt" --trust "$work/sig.pub")
mkdir "$work/x"
t_untar=$(t sh -c "age -d -i '$work/id.txt' '$work/b.age' | tar -C '$work/x' -xf -")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "audit log ${mib} MiB"
echo "backup create      ${t_create}s   tar -c | age -r   ${t_tar}s     ratio $(ratio "$t_tar" "$t_create") (target >= 0.90)"
echo "backup verify      ${t_verify}s   age -d | tar -x   ${t_untar}s   ratio $(ratio "$t_untar" "$t_verify") (target >= 0.90)"
