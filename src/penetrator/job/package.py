"""Install packages: read once on the job's side (SHA-256), pushed by SFTP only to
machines that lack a file with the same SHA-256, verified on arrival, extracted
into a directory named by the checksum (a retry or a reinstall resends nothing).

Remote layout under the work dir::

    packages/<sha256>.tgz          the tarball, as sent
    pkg/<sha256[:16]>/             its extraction ({package_dir}), with .extracted
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from penetrator.api.jobconfig import JobConfig
from penetrator.job.template import join_path, package_dir
from penetrator.job.transport import MachineError, RemoteCommandFailed, Session

EXTRACTED_MARKER = ".extracted"


@dataclass(frozen=True)
class Package:
    arch: str
    path: Path
    sha256: str
    size: int


def describe_package(arch: str, path: Path) -> Package:
    """Checksum and size of one package file (blocking)."""
    if not path.is_file():
        raise FileNotFoundError(f"package for {arch} not found: {path}")
    return Package(arch, path, sha256_file(path), path.stat().st_size)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


async def load_packages(cfg: JobConfig) -> dict[str, Package]:
    """Checksum every configured package once (in a thread)."""
    out: dict[str, Package] = {}
    for arch, p in sorted(cfg.packages.items()):
        out[arch] = await asyncio.to_thread(describe_package, arch, Path(p))
    return out


@dataclass(frozen=True)
class RemotePaths:
    archive: str
    directory: str

    @classmethod
    def of(cls, work_dir: str, pkg: Package) -> RemotePaths:
        return cls(
            join_path(work_dir, "packages", pkg.sha256 + ".tgz"),
            package_dir(work_dir, pkg.sha256),
        )


def probe_script(rel: RemotePaths) -> str:
    """Shell fragment (run in the work dir) printing two lines: the archive's
    checksum line (or '-') and 'yes'/'no' for an extraction."""
    a, d = shlex.quote(rel.archive), shlex.quote(rel.directory + "/" + EXTRACTED_MARKER)
    return f"(sha256sum -- {a} 2>/dev/null || echo -) && (test -e {d} && echo yes || echo no)"


def parse_probe(sha_line: str, extracted_line: str, pkg: Package) -> tuple[bool, bool]:
    """(archive present with the right checksum, extracted)."""
    return sha_line.split(" ", 1)[0] == pkg.sha256, extracted_line.strip() == "yes"


def extract_command(paths: RemotePaths) -> str:
    a, d = shlex.quote(paths.archive), paths.directory
    tmp, final = shlex.quote(d + ".tmp"), shlex.quote(d)
    marker = shlex.quote(d + ".tmp/" + EXTRACTED_MARKER)
    return (
        f"rm -rf -- {tmp} && mkdir -p -- {tmp} && tar -xzf {a} -C {tmp} && "
        f"touch -- {marker} && rm -rf -- {final} && mv -- {tmp} {final}"
    )


def verify_command(path: str, sha256: str) -> str:
    """Exit 0 iff the file's SHA-256 is the expected one."""
    return f"echo {shlex.quote(sha256 + '  ' + path)} | sha256sum -c --status -"


async def ensure_package(
    s: Session,
    pkg: Package,
    work_dir: str,
    present: tuple[bool, bool],
    transfer_limit: float,
    command_limit: float,
) -> tuple[str, bool]:
    """Make the package available on the machine: (package dir, transferred?).

    ``present`` is (archive with this checksum there, extracted) from the probe;
    the packages directory exists (made by the probe)."""
    paths = RemotePaths.of(work_dir, pkg)
    have, extracted = present
    if have and extracted:
        return paths.directory, False
    if have:
        await s.run("package extract", extract_command(paths), transfer_limit)
        return paths.directory, False
    part = paths.archive + ".part"
    await s.put("package upload", str(pkg.path), part, transfer_limit)
    try:
        await s.run("package verify", verify_command(part, pkg.sha256), command_limit)
    except RemoteCommandFailed:
        raise MachineError("package verify failed: the uploaded file's SHA-256 differs") from None
    move = f"mv -f -- {shlex.quote(part)} {shlex.quote(paths.archive)}"
    await s.run("package extract", f"{move} && {extract_command(paths)}", transfer_limit)
    return paths.directory, True
