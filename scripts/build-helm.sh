#!/usr/bin/env bash
# Builds Helm v3.22.0 from its Go module into a per-machine cache, once.
# The export tests (bundles/export) run 'helm lint --strict' and 'helm template'
# on generated charts with it; they find it via $QWA_HELM or on $PATH.
#
#   scripts/build-helm.sh            # prints the binary's path
#   QWA_CACHE=/var/cache/qwa scripts/build-helm.sh
#
# Helm needs no cluster for lint and template, so nothing here talks to one.
set -euo pipefail

version=v3.22.0
cache="${QWA_CACHE:-$HOME/.cache/qwen-appliance}"
bindir="$cache/helm-$version/bin"
bin="$bindir/helm"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bindir"
echo "build-helm: go install helm.sh/helm/v3/cmd/helm@$version (a few minutes)" >&2
# Into a temporary directory first, so an interrupted build never leaves a
# half-written binary at the cached path.
tmp="$(mktemp -d "$cache/helm-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$version"
mv "$tmp/helm" "$bin"
echo "$bin"
