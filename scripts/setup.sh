#!/usr/bin/env bash
# Installs everything penetrator's tests and demo need on a fresh machine, as
# root: Debian packages, the Python venv (.venv), and the Go-built Kubernetes
# binaries and helm (cached outside the repo, keyed by version: the first build takes
# several minutes, later runs reuse it). Idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (network namespaces and sshd need it)" >&2; exit 1; }

# Tools the sandbox and tests run (see dev/src/penetrator_dev/sandbox/preflight.py).
apt_packages=(iproute2 nftables openssh-server openssh-client util-linux mount procps tmux curl
  mmdebstrap umoci runc  # the image: scripts/image.sh and tests/e2e/test_image.py
  containerd containernetworking-plugins busybox-static)  # the sandbox's real nodes (kubelet + containerd + CNI bridge, busybox for the pause image; issue 14)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}" >&2
  # Never start the packaged sshd on the host: the sandbox runs its own.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "setup.sh: the Go toolchain is needed to build the control plane" >&2; exit 1; }

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup.sh: Python >= 3.11 is needed" >&2; exit 1; }
stamp=.venv/.installed-$(cat pyproject.toml dev/pyproject.toml | sha256sum | cut -c1-12)
if [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' -e ./dev
  rm -f .venv/.installed-*; touch "$stamp"
fi

bin_dir=$(testenv/build.sh)
echo "setup.sh: Kubernetes binaries in $bin_dir" >&2
helm_dir=$(testenv/helm/build.sh)
echo "setup.sh: helm (charts/penetrator, scripts/render-manifests.sh) in $helm_dir" >&2
