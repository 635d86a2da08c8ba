#!/usr/bin/env bash
# Builds the penetrator image (the operator and the install Job run the same
# image: `penetrator operator`, `penetrator job`) without a container registry
# or daemon, and prints as its last line the path of the OCI archive
# (oci-archive format, tag penetrator:<version>) it wrote.
#
#   scripts/image.sh            # build, or reuse the cached archive for these inputs
#   scripts/image.sh --rebuild  # build again (the Debian packages stay cached)
#   scripts/image.sh --refresh  # also fetch the Debian packages again (security updates)
#
# What is in it: Debian bookworm's python3.11 (python3.11-minimal and
# libpython3.11-stdlib with their library dependencies, unpacked by mmdebstrap
# --variant=extract: no dpkg, apt, shell or coreutils), the product's wheel
# and its dependencies pinned with hashes in scripts/image-requirements.txt,
# and .pyc files compiled once (hash-based, so no write at run time). It runs as
# uid/gid 65532, entrypoint /usr/local/bin/penetrator. The development tools
# (penetrator-dev: sandbox, testenv) are a separate distribution, never installed.
#
# Reproducible: the same inputs give the same layer, config and manifest
# digests, and the same archive bytes. SOURCE_DATE_EPOCH is the time of the
# last commit touching the inputs (or the environment's SOURCE_DATE_EPOCH).
# The Debian packages are those bookworm served at the first build on this
# machine; their versions are in the image (/var/lib/dpkg/status.d) and in the
# cache, and are part of the cache key. Cache: ~/.cache/penetrator/ (or
# $PENETRATOR_CACHE): image-debian-<key>/ and image-<key>.tar.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://security.debian.org/debian-security $suite-security main"
)
# python3.11 and the libraries its standard library loads; apt adds their
# dependencies. Those only needed to install packages are removed again.
debian_packages=(python3.11-minimal libpython3.11-stdlib)
debian_dropped=(dpkg tar readline-common libacl1 libselinux1 libpcre2-8-0 libmd0 libzstd1)
python_site=/usr/local/lib/python3.11/dist-packages
user_id=65532

# mmdebstrap calls this back (--extract-hook) while the .deb files are still in
# the rootfs: keep a dpkg record per package for scanners, drop unneeded ones.
if [ "${1:-}" = --debian-hook ]; then
  root=$2
  mkdir -p "$root/var/lib/dpkg/status.d"
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    pkg=$(dpkg-deb -f "$deb" Package)
    if [[ " ${debian_dropped[*]} " == *" $pkg "* ]]; then
      dpkg-deb --fsys-tarfile "$deb" | tar -t | while read -r path; do
        [ -d "$root/$path" ] && [ ! -L "$root/$path" ] || rm -f "$root/$path"
      done
    else
      dpkg-deb -f "$deb" > "$root/var/lib/dpkg/status.d/$pkg"
    fi
  done
  exit 0
fi

rebuild=0 refresh=0
for arg in "$@"; do
  case $arg in
    --rebuild) rebuild=1 ;;
    --refresh) rebuild=1 refresh=1 ;;
    *) echo "usage: scripts/image.sh [--rebuild|--refresh]" >&2; exit 2 ;;
  esac
done

for tool in mmdebstrap umoci dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "image.sh: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
py=$repo/.venv/bin/python
[ -x "$py" ] || { echo "image.sh: $py is missing: run scripts/setup.sh" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "image.sh: run as root (mmdebstrap and chroot need it)" >&2; exit 1; }

cache=${PENETRATOR_CACHE:-$HOME/.cache/penetrator}
mkdir -p "$cache"
arch=$(dpkg --print-architecture)
digest16() { sha256sum | cut -c1-16; }

# --- The Debian part: fetched once, cached by what decides its contents.
debian_key=$( {
  printf '%s\n' "$suite" "$arch" "${mirrors[@]}" "${debian_packages[@]}" -- "${debian_dropped[@]}"
  mmdebstrap --version
  # this script's hook and Debian part: they decide what the rootfs holds
  sed -n -e '/^if \[ "${1:-}" = --debian-hook/,/^fi/p' -e '/^# --- The Debian part/,/^# --- The inputs/p' "$0"
} | digest16)
debian=$cache/image-debian-$debian_key
exec 9> "$cache/image.lock"
flock 9  # one build at a time per cache: concurrent ones wait, then reuse it
if [ "$refresh" = 1 ] || [ ! -e "$debian/packages.txt" ]; then
  echo "image.sh: unpacking Debian $suite's python3.11 into $debian" >&2
  rm -rf "$debian" "$debian.partial"
  mkdir -p "$debian.partial/rootfs"
  include=$(IFS=,; echo "${debian_packages[*]}")
  mmdebstrap --quiet --mode=root --variant=extract --include="$include" \
    --extract-hook="bash '$repo/scripts/image.sh' --debian-hook \"\$1\"" \
    "$suite" "$debian.partial/rootfs" "${mirrors[@]}" >&2
  ( cd "$debian.partial/rootfs"
    # apt's and mmdebstrap's own files (hostname and resolv.conf are the build
    # machine's), documentation, and what the dropped packages leave behind.
    rm -rf etc/apt etc/hostname etc/resolv.conf etc/fstab etc/dpkg etc/alternatives \
      sbin/start-stop-daemon var/lib/apt var/cache var/log var/lib/dpkg/[!s]* var/lib/dpkg/status \
      usr/share/{doc,man,info,locale,lintian,bug,binfmts,polkit-1,dpkg} dev/*
    find . -mindepth 2 -depth -type d -empty -delete )
  for f in "$debian.partial/rootfs"/var/lib/dpkg/status.d/*; do
    printf '%s=%s\n' "$(basename "$f")" "$(sed -n 's/^Version: //p' "$f")"
  done > "$debian.partial/packages.txt"
  mv "$debian.partial" "$debian"
fi

# --- The inputs of the final image, and their key.
inputs=(src pyproject.toml README.md scripts/image.sh scripts/image-requirements.txt)
cd "$repo"
version=$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git log -1 --format=%H -- "${inputs[@]}")
  [ -z "$(git status --porcelain -- "${inputs[@]}")" ] || revision=$revision-dirty
  epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- "${inputs[@]}")}
  files() { git ls-files -z --cached --others --exclude-standard -- "${inputs[@]}"; }
else
  revision=unknown
  epoch=${SOURCE_DATE_EPOCH:?image.sh: not a git checkout: set SOURCE_DATE_EPOCH}
  files() { find "${inputs[@]}" -type f -not -path '*/__pycache__/*' -print0; }
fi
source_url=${PENETRATOR_SOURCE_URL:-$(git config --get remote.origin.url 2>/dev/null || echo unknown)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
tools=$("$py" -m pip --version | cut -d' ' -f1-2; "$py" -c 'import setuptools; print(setuptools.__version__)'; umoci --version; tar --version | head -1)
key=$( {
  printf '%s\n' "$debian_key" "$version" "$revision" "$epoch" "$source_url" "$tools"
  cat "$debian/packages.txt"
  files | LC_ALL=C sort -z | xargs -0 -r sha256sum
} | digest16)
archive=$cache/image-$key.tar
if [ "$rebuild" = 0 ] && [ -e "$archive" ]; then
  echo "image.sh: cached (inputs unchanged)" >&2
  echo "$archive"
  exit 0
fi

work=$(mktemp -d "$cache/image-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export SOURCE_DATE_EPOCH=$epoch PYTHONHASHSEED=0 LC_ALL=C TZ=UTC
root=$work/rootfs
cp -a "$debian/rootfs" "$root"

# --- The product's wheel and its locked dependencies, installed as pip would
# for this python, without compiling (compiled below by the image's python).
echo "image.sh: installing penetrator $version and its locked dependencies" >&2
mkdir "$work/wheels"
"$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$work/wheels" "$repo" >&2
wheel=$(echo "$work"/wheels/penetrator-*.whl)
{ cat scripts/image-requirements.txt
  echo "penetrator==$version --hash=sha256:$(sha256sum "$wheel" | cut -d' ' -f1)"; } > "$work/requirements.txt"
pip_arch=$(uname -m)
platforms=()
for minor in $(seq 36 -1 17); do platforms+=("--platform=manylinux_2_${minor}_$pip_arch"); done
platforms+=("--platform=manylinux2014_$pip_arch" --python-version=3.11 --implementation=cp)
"$py" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps --require-hashes \
  "${platforms[@]}" -d "$work/wheels" -r scripts/image-requirements.txt >&2
"$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$work/wheels" \
  --only-binary=:all: --no-deps --require-hashes --no-compile "${platforms[@]}" \
  --target "$root$python_site" -r "$work/requirements.txt" >&2
rm -rf "${root:?}$python_site/bin"  # console scripts naming the build's python: ours is below
mkdir -p "$root/usr/local/bin"
printf '#!/usr/bin/python3.11 -I\nimport sys\nfrom penetrator.cli.main import main\nsys.exit(main())\n' \
  > "$root/usr/local/bin/penetrator"
chmod 0755 "$root/usr/local/bin/penetrator"
ln -s python3.11 "$root/usr/bin/python3"

# --- The few files a distroless image has: users, name service, a home, /tmp.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
  "$user_id" "$user_id" > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$user_id" > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
mkdir -p "$root/tmp" "$root/home/nonroot" "$root/root"

# Compile every module once with the image's own python, single process and a
# fixed hash seed so the bytes repeat; unchecked-hash: the files never change.
chroot "$root" /usr/bin/python3.11 -I -m compileall -q -j 1 --invalidation-mode unchecked-hash \
  /usr/lib/python3.11 "$python_site" >&2
# A start in the image proves the libraries are all there.
chroot "$root" /usr/bin/python3.11 -I -c 'import ssl, ctypes, lzma, bz2, sqlite3, uuid, penetrator.cli.main, penetrator.job.runner, penetrator.operator.handlers, cryptography.hazmat.bindings._rust, pydantic_core, yaml, aiohttp, msgspec' >&2
[ "$(chroot "$root" /usr/local/bin/penetrator --version)" = "penetrator, version $version" ]

# --- Normalise ownership, modes and times, then one layer and the image.
chown -R 0:0 "$root"
chown "$user_id:$user_id" "$root/home/nonroot"
chmod 0700 "$root/home/nonroot" "$root/root"
chmod 1777 "$root/tmp"
find "$root" -newermt "@$epoch" -exec touch --no-dereference --date="@$epoch" {} +
tarflags=(--sort=name --format=posix --numeric-owner --mtime="@$epoch" --clamp-mtime
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
tar "${tarflags[@]}" -C "$root" -cf "$work/layer.tar" .

layout=$work/oci
image=$layout:$version
annotations=(
  "org.opencontainers.image.title=penetrator"
  "org.opencontainers.image.description=Adds and reinstalls edge machines behind NAT as Kubernetes nodes (operator and install Job)"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.licenses=Apache-2.0"
)
umoci init --layout "$layout"
umoci new --image "$image"
umoci raw add-layer --image "$image" --history.created="$created" \
  --history.created_by="scripts/image.sh: Debian $suite python3.11 + penetrator $version" "$work/layer.tar"
config=(--no-history --created="$created" --author=penetrator --os=linux --architecture="$arch"
  --config.user="$user_id:$user_id" --config.workingdir=/home/nonroot
  --config.entrypoint=/usr/local/bin/penetrator
  --config.env=PATH=/usr/local/bin:/usr/bin --config.env=HOME=/home/nonroot
  --config.env=PYTHONDONTWRITEBYTECODE=1)
for a in "${annotations[@]}"; do config+=(--config.label="$a" --manifest.annotation="$a"); done
umoci config --image "$image" "${config[@]}"
umoci gc --layout "$layout"
find "$layout" -exec touch --no-dereference --date="@$epoch" {} +
tar "${tarflags[@]}" --owner=0 --group=0 -C "$layout" -cf "$work/image.tar" .
mv "$work/image.tar" "$archive"
digest=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$layout/index.json")
echo "image.sh: penetrator:$version manifest $digest, $(du -m "$archive" | cut -f1) MB archive" >&2
echo "$archive"
