#!/usr/bin/env bash
# make demo: the richest real end-to-end run the project has, on files it
# makes itself, with no network. Everything happens under a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
QA=$PWD/bin/qwen-appliance
[ -x "$QA" ] || make -s build
work=$(mktemp -d /tmp/qwen-appliance-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "connected side: a signing key"
"$QA" keys generate --out release --comment "demo release key"

step "connected side: a bundle directory, pinned by a signed manifest"
mkdir -p bundle/model
head -c 48M /dev/urandom > bundle/model/weights.bin
printf '{"architectures":["Qwen2ForCausalLM"]}\n' > bundle/model/config.json
"$QA" manifest create bundle --key release.key --name demo --version 1 --expires 30d
head -c 600 bundle/manifest.json; echo "…"

step "isolated side: verify signature, expiry and every byte"
"$QA" manifest verify bundle --trust release.pub

step "tampering: one flipped byte in the weights is named by its byte range (exit 3)"
printf '\x00' | dd of=bundle/model/weights.bin bs=1 seek=20000000 conv=notrunc status=none
set +e
"$QA" manifest verify bundle --trust release.pub
echo "exit status: $?"
set -e

echo
echo "demo finished; everything it made is removed."
