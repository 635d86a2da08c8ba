"""The sandbox's join package: a tarball the installer handles exactly like the
real edgeadm package (copy, unpack, ``edgeadm reset --force``, ``edgeadm join
--config FILE``). Only the content differs: ``edgeadm`` is a small sh script
running this checkout's Python with ``-m penetrator_dev.sandbox.join`` (the
sandbox's machines share the host's filesystem, so the venv is there).

The files are at the top of the archive (penetrator's job unpacks with plain
``tar -xzf`` and runs ``{package_dir}/edgeadm``) and again under one top
directory, so SuperEdge's own script (``tar -zxf ... --strip-components 1``,
which drops the top-level copies) finds them too::

    edgeadm                                    the join program (sh, 0755)
    kube-linux-<arch>-<k8s version>.tar.gz     placeholder for --install-pkg-path
    VERSION
    edgeadm-linux-<arch>-<k8s version>/        the same three files

The archive is reproducible (fixed mtimes, owners and order): the same
checkout gives the same sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shlex
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.37.2"
ARCHES = ("amd64", "arm64")
MTIME = 1_700_000_000

EDGEADM_SCRIPT = """#!/bin/sh
# edgeadm of the penetrator sandbox: joins this edge machine at the API level
# (token discovery, CSR TLS bootstrap, Node + Lease; heartbeats by the
# sandbox's heartbeat service). Built for {arch}.
exec {python} -m penetrator_dev.sandbox.join "$@"
"""


@dataclass(frozen=True)
class JoinPackage:
    path: Path
    sha256: str
    arch: str
    k8s_version: str
    top_dir: str  # the copy for `tar --strip-components 1`


def package_name(arch: str, k8s_version: str = K8S_VERSION) -> str:
    """File name as the original installer expects it: edgeadm-<arch>-<ver>.tar.gz."""
    return f"edgeadm-{arch}-{k8s_version}.tar.gz"


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=MTIME) as g:
        g.write(data)
    return buf.getvalue()


def _tar_bytes(files: list[tuple[str, bytes, int]], dirs: list[str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = MTIME
            ti.uname = ti.gname = "root"
            tar.addfile(ti)
        for name, data, mode in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = mode
            ti.mtime = MTIME
            ti.uname = ti.gname = "root"
            tar.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def build_join_package(
    dest: Path,
    arch: str = "amd64",
    *,
    k8s_version: str = K8S_VERSION,
    python: str | None = None,
) -> JoinPackage:
    """Write the join package for `arch` into directory `dest`; return its
    path and sha256."""
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}")
    py = python or sys.executable
    top = f"edgeadm-linux-{arch}-{k8s_version}"
    script = EDGEADM_SCRIPT.format(arch=arch, python=shlex.quote(py)).encode()
    kube = _gz(_tar_bytes([("README", b"placeholder: the sandbox runs no kubelet\n", 0o644)], []))
    content = [
        ("edgeadm", script, 0o755),
        (f"kube-linux-{arch}-{k8s_version}.tar.gz", kube, 0o644),
        ("VERSION", f"penetrator-sandbox {k8s_version} {arch}\n".encode(), 0o644),
    ]
    files = content + [(f"{top}/{n}", d, m) for n, d, m in content]
    data = _gz(_tar_bytes(files, [top]))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / package_name(arch, k8s_version)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return JoinPackage(path, hashlib.sha256(data).hexdigest(), arch, k8s_version, top)


def build_join_packages(dest: Path, *, k8s_version: str = K8S_VERSION) -> dict[str, JoinPackage]:
    """Both architectures (same program, different names)."""
    return {a: build_join_package(dest, a, k8s_version=k8s_version) for a in ARCHES}
