#!/usr/bin/env bash
# real-gpu.sh: the checks of the real NVML path, for a host with an NVIDIA GPU
# and driver but no Go toolchain. Build on the build machine first:
#
#   make device-gpu        # bin/device/qwen-appliance and bin/device/gpu.test
#
# then copy the repository (with bin/device) to the GPU host and run this
# script there. Outputs go to $OUT (default: a temporary directory):
#   gpu-test.txt     the gpu package's tests against the real NVML, held
#                    against nvidia-smi, and a torch process that must show up
#                    as "another process on the GPU"
#   preflight.txt    scripts/preflight-real-gpu.sh: preflight of a Qwen2.5-7B
#                    bf16 bundle beside nvidia-smi's figures
#   visible.txt      CUDA_VISIBLE_DEVICES by UUID (what run --gpus sets)
# It exits non-zero when any of them failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$(mktemp -d)}
bin=bin/device
rc=0
step() { local name=$1; shift; echo "== $name"; "$@" >"$out/$name.txt" 2>&1; local s=$?; cat "$out/$name.txt"; [[ $s == 0 ]] || { echo "!! $name exited $s"; rc=1; }; }

nvidia-smi -q >"$out/nvidia-smi-q.txt" 2>&1
step gpu-test "$bin/gpu.test" -test.v -test.count=1
step preflight env QWA_BIN="$bin/qwen-appliance" scripts/preflight-real-gpu.sh

visible() {
  uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
  count() { CUDA_VISIBLE_DEVICES=$1 python3 -c 'import torch; print(torch.cuda.device_count())'; }
  n=$(count "$uuid"); echo "CUDA_VISIBLE_DEVICES=$uuid: $n device(s)"; [[ $n == 1 ]] || return 1
  n=$(count "GPU-00000000-0000-0000-0000-000000000000"); echo "CUDA_VISIBLE_DEVICES=<unknown uuid>: $n device(s)"; [[ $n == 0 ]]
}
step visible visible
echo "== outputs in $out; status $rc"
exit $rc
