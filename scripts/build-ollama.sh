#!/usr/bin/env bash
# Builds Ollama v0.6.5 from the Go module proxy into a per-machine cache, once.
# The CPU end-to-end tests of provision/runtime find it there (or via $QWA_OLLAMA).
#
#   scripts/build-ollama.sh            # prints the binary's path
#   QWA_CACHE=/var/cache/qwa scripts/build-ollama.sh
#
# Needs Debian's nlohmann-json3-dev (its C++ sources include <nlohmann/json.hpp>).
# Newer Ollama module versions do not build from the module proxy: their C++
# sources include headers from vendor/ folders that module archives leave out.
set -euo pipefail

version=v0.6.5
cache="${QWA_CACHE:-$HOME/.cache/qwen-appliance}"
bindir="$cache/ollama-$version/bin"
bin="$bindir/ollama"

if [ -x "$bin" ]; then # the path names the version; go install builds report 0.0.0
  echo "$bin"
  exit 0
fi

if [ ! -f /usr/include/nlohmann/json.hpp ]; then
  echo "build-ollama: /usr/include/nlohmann/json.hpp missing; install Debian's nlohmann-json3-dev" >&2
  exit 1
fi

mkdir -p "$bindir"
echo "build-ollama: go install github.com/ollama/ollama@$version (a few minutes)" >&2
# The install goes to a temporary directory first so an interrupted build
# never leaves a half-written binary at the cached path.
tmp="$(mktemp -d "$cache/ollama-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=1 go install "github.com/ollama/ollama@$version"
mv "$tmp/ollama" "$bin"
echo "$bin"
