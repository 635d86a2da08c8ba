#!/usr/bin/env bash
# Builds the helm command from the official Go module pinned in go.mod, once,
# into the same cache as the Kubernetes binaries, keyed by the Helm version
# and the hash of go.mod + go.sum. Prints the directory holding `helm`;
# `build.sh --check` only says whether it is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(grep -oE "^\s*(require )?helm.sh/helm/v[0-9]+ v[0-9.]+" "$here/go.mod" | awk "{print \$NF}")
[ -n "$version" ] || { echo "helm/build.sh: no helm.sh/helm version in go.mod" >&2; exit 1; }
recipe=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
cache_root=${PENETRATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/penetrator}
out="$cache_root/helm-$version-$recipe"
if [ -x "$out/bin/helm" ]; then echo "$out/bin"; exit 0; fi
if [ "${1:-}" = "--check" ]; then echo "helm/build.sh: not built yet: $out" >&2; exit 1; fi
# One build at a time (shared with the Kubernetes build: 2 cores).
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
flock 9
if [ -x "$out/bin/helm" ]; then echo "$out/bin"; exit 0; fi

command -v go >/dev/null || { echo "helm/build.sh: the Go toolchain is missing (install Go >= $(awk '$1=="go"{print $2}' "$here/go.mod"))" >&2; exit 1; }
tmp="$out.partial.$$"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT
major=$(echo "$version" | cut -d. -f1)
cd "$here"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
t0=$(date +%s)
# The version stamp Helm's release build sets, so `helm version` tells the truth.
go build -trimpath -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
  -o "$tmp/bin/helm" "helm.sh/helm/$major/cmd/helm" >&2
echo "helm/build.sh: built Helm $version in $(( $(date +%s) - t0 )) s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
