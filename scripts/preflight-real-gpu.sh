#!/usr/bin/env bash
# preflight-real-gpu.sh: on a host with a real NVIDIA GPU, print what
# `qwen-appliance preflight --json` read through NVML beside what nvidia-smi
# reports, so the two can be compared line by line.
#
#   scripts/preflight-real-gpu.sh                      # a Qwen2.5-7B bf16 test bundle
#   scripts/preflight-real-gpu.sh --bundle DIR --trust K.pub [more preflight flags]
#
# Without --bundle it signs a throwaway manifest carrying Qwen2.5-7B-Instruct's
# facts (28 layers, 4 KV heads, head dim 128, bf16, 15.2 GB of weights, 32768
# tokens) in a temporary directory; nothing is installed or changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null; then
  echo "preflight-real-gpu: nvidia-smi not found; run this on a host with the NVIDIA driver" >&2
  exit 0
fi

export CGO_CFLAGS="${CGO_CFLAGS:--Wno-deprecated-declarations}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# QWA_BIN: a binary built elsewhere, for a GPU host without Go.
bin="${QWA_BIN:-$work/qwen-appliance}"
[[ -n "${QWA_BIN:-}" ]] || go build -o "$bin" ./cmd/qwen-appliance

args=("$@")
if [[ " $* " != *" --bundle "* ]]; then
  "$bin" keys generate --out "$work/k" >/dev/null
  mkdir -p "$work/bundle/model"
  head -c 65536 /dev/urandom >"$work/bundle/model/model-00001-of-00004.safetensors"
  cat >"$work/meta.json" <<'EOF'
{"model": {"name": "Qwen/Qwen2.5-7B-Instruct", "architecture": "qwen2", "format": "safetensors", "layers": 28,
           "attentionHeads": 28, "kvHeads": 4, "headDim": 128, "hiddenSize": 3584, "dtype": "bf16",
           "maxContext": 32768, "weightsBytes": 15231233024},
 "requirements": {"accelerator": "nvidia", "minComputeCapability": "8.0"},
 "runtime": {"kind": "vllm", "devices": ["cuda"], "modelPath": "model"},
 "provenance": {"source": "hf://Qwen/Qwen2.5-7B-Instruct"}}
EOF
  "$bin" manifest create "$work/bundle" --key "$work/k.key" --name qwen2.5-7b-instruct --meta "$work/meta.json" >/dev/null
  args=(--bundle "$work/bundle" --trust "$work/k.pub" --store "$work/store" "${args[@]}")
fi

rc=0
"$bin" preflight "${args[@]}" --json >"$work/preflight.json" || rc=$?

echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap --format=csv
echo
echo "== qwen-appliance preflight (exit status $rc)"
if command -v python3 >/dev/null; then
  python3 - "$work/preflight.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
g = r.get("gpu") or {}
print("index, name, memory.total [MiB], memory.free [MiB], driver_version, compute_cap")
for d in g.get("devices", []):
    print(f'{d["index"]}, {d["name"]}, {d["memoryTotalBytes"] >> 20} MiB, {d["memoryFreeBytes"] >> 20} MiB, '
          f'{g.get("driverVersion", "")}, {d["computeCapability"]}')
print()
print(f'verdict: {r["verdict"]}, mode: {r["mode"]}')
p = r.get("plan")
if p:
    print(f'plan: tensor parallel {p["tensorParallel"]} on GPU {p["devices"]}, context {p["context"]}, '
          f'up to {p["maxConcurrency"]} sequences, need {p["needBytes"] / 2**30:.1f} GiB of {p["budgetBytes"] / 2**30:.1f} GiB per GPU')
for c in r["checks"]:
    if c["status"] != "pass":
        print(f'{c["status"]}: {c["name"]}: {c["found"]}')
EOF
fi
echo
echo "== full preflight JSON"
cat "$work/preflight.json"
