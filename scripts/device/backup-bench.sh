#!/usr/bin/env bash
# backup-bench.sh: the backup speed benchmarks (BenchmarkCreate and
# BenchmarkVerify, package backup) on a host without Go, such as a
# many-core GPU server. Build on the build machine first:
#
#   make device-bench      # bin/device-bench/backup.test, and Debian's age beside it
#
# then copy the repository (with bin/device-bench) there and run this. Each
# size (MIBS, default "256 1024") prints the benchmarks and each part's
# ratio to Debian's tar | age (create) or age -d | tar -x (the rest).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=bin/device-bench
export PATH=$PWD/$dir:$PATH
echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/2^20}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for mib in ${MIBS:-256 1024}; do
  echo "== audit log $mib MiB"
  QWA_BENCH_MIB=$mib "$dir/backup.test" -test.run '^$' -test.bench '^Benchmark(Create|Verify)$' \
    -test.benchtime "${REPS:-3}x" | grep '^Benchmark' | tee /tmp/bench.txt
  awk '{sub(/-[0-9]+$/, "", $1); split($1, p, "/"); ns[NR] = $3; grp[NR] = p[1]; name[NR] = p[2]
         if (p[2] == "tar-age" || p[2] == "age-tar") ref[p[1]] = $3}
    END {for (i = 1; i <= NR; i++) if (!(name[i] == "tar-age" || name[i] == "age-tar") && (grp[i] in ref))
      printf "%-8s ratio %.2f (Debian tar and age ns/op over its ns/op)\n", name[i], ref[grp[i]] / ns[i]}' /tmp/bench.txt | sort
done
