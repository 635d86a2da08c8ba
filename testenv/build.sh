#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kubelet and kubeadm (the sandbox's real nodes) from the official Go modules pinned in go.mod, once, into a cache
# outside the repository keyed by the Kubernetes version and the hash of
# go.mod + go.sum. Prints the directory holding the binaries;
# `build.sh --check` only says whether they are there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(grep -oE "^\s*(require )?k8s.io/kubernetes v[0-9.]+" "$here/go.mod" | awk "{print \$NF}")
[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes version in go.mod" >&2; exit 1; }
# The key covers what decides the binaries: the module graph.
recipe=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
cache_root=${PENETRATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/penetrator}
out="$cache_root/kubernetes-$version-$recipe"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm)
complete=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$out/bin"; exit 0; fi
if [ "${1:-}" = "--check" ]; then echo "build.sh: not built yet: $out" >&2; exit 1; fi
# One build at a time; whoever waited finds the binaries built.
mkdir -p "$cache_root"
exec 9>"$cache_root/build.lock"
flock 9
complete=1
for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || complete=0; done
if [ "$complete" = 1 ]; then echo "$out/bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: the Go toolchain is missing (install Go >= $(awk '$1=="go"{print $2}' "$here/go.mod"))" >&2; exit 1; }
tmp="$out.partial.$$"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT
minor=$(echo "$version" | cut -d. -f2)
# The same version stamps the Kubernetes release build sets, so that
# `kubectl version` and the apiserver's /version tell the truth.
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
cd "$here"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
t0=$(date +%s)
go build -trimpath -ldflags "$ld" -o "$tmp/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kubeadm >&2
go build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3 >&2
echo "build.sh: built Kubernetes $version in $(( $(date +%s) - t0 )) s" >&2
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
