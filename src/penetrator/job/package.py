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

import httpx2

from penetrator.api.jobconfig import ARCHES, JobConfig
from penetrator.api.packages import UrlPackage
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


class PackageProblem(Exception):
    """A package cannot be had: the job cannot start (no machine touched). ``reason``
    is a CamelCase word for the task's condition; the message holds no secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


NOT_FOUND, CHECKSUM, FETCH = "PackageNotFound", "PackageChecksumMismatch", "PackageFetchFailed"
TARBALL_SUFFIXES = (".tar.gz", ".tgz")


def find_tarball(directory: Path) -> Path | None:
    """The one tarball in ``directory`` (None: no such directory or no tarball);
    ``PackageProblem`` if there are several (which one would be a guess)."""
    try:
        found = sorted(p for p in directory.iterdir() if p.name.endswith(TARBALL_SUFFIXES))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise PackageProblem(NOT_FOUND, f"cannot read {directory}: {e.strerror}") from None
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:5])
        raise PackageProblem(NOT_FOUND, f"{directory} holds several tarballs ({names}); keep one")
    return found[0] if found else None


def describe_root(root: Path, version: str) -> dict[str, Package]:
    """The packages of ``root`` (``<arch>/<one tarball>``, blocking): an architecture
    without one has none (its machines fail); none at all is ``PackageNotFound``."""
    out: dict[str, Package] = {}
    for arch in ARCHES:
        path = find_tarball(root / arch)
        if path is not None:
            out[arch] = describe_package(arch, path)
    if not out:
        raise PackageProblem(
            NOT_FOUND,
            f"no package for Kubernetes {version}: no tarball in {root}/{{{','.join(ARCHES)}}}/",
        )
    return out


async def fetch_package(arch: str, source: UrlPackage, directory: Path, limit: float) -> Package:
    """Download ``source`` into ``directory`` (once per job), hashing on the way; the
    file is kept only with the expected SHA-256."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / f"{arch}-{source.sha256[:16]}.tar.gz"
    part = path.with_name(path.name + ".part")
    h, size = hashlib.sha256(), 0
    shown = source.url.split("?", 1)[0][:200]  # a query may carry a signature
    try:
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30.0), follow_redirects=True) as http,
            asyncio.timeout(limit),
            http.stream("GET", source.url) as response,
        ):
            if response.status_code in (404, 410):
                raise PackageProblem(NOT_FOUND, f"package for {arch} not found: {shown} (HTTP 404)")
            if response.status_code != 200:
                raise PackageProblem(FETCH, f"{shown}: HTTP {response.status_code}")
            with part.open("wb") as f:
                async for chunk in response.aiter_bytes(1 << 20):
                    h.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
    except (httpx2.HTTPError, TimeoutError, OSError) as e:
        part.unlink(missing_ok=True)
        raise PackageProblem(FETCH, f"package for {arch}: {shown}: {type(e).__name__}") from None
    if h.hexdigest() != source.sha256:
        part.unlink(missing_ok=True)
        raise PackageProblem(
            CHECKSUM,
            f"package for {arch}: expected SHA-256 {source.sha256}, got {h.hexdigest()} "
            f"(from {shown})",
        )
    part.replace(path)
    return Package(arch, path, source.sha256, size)


async def load_packages(cfg: JobConfig) -> dict[str, Package]:
    """Every configured package, checksummed once (in a thread) or fetched and checked
    (``packageUrls``); ``PackageProblem`` before any machine is touched."""
    out: dict[str, Package] = {}
    for arch, p in sorted(cfg.packages.items()):
        try:
            out[arch] = await asyncio.to_thread(describe_package, arch, Path(p))
        except FileNotFoundError as e:
            raise PackageProblem(NOT_FOUND, str(e)) from None
    if cfg.package_root is not None:
        root = Path(cfg.package_root)
        out.update(await asyncio.to_thread(describe_root, root, cfg.kubernetes_version))
    for arch, source in sorted(cfg.package_urls.items()):
        limit = cfg.timeouts.transfer
        out[arch] = await fetch_package(arch, source, Path(cfg.download_dir), limit)
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


@dataclass(frozen=True)
class Delivery:
    directory: str  # {package_dir}
    method: str | None  # None (already there), "sftp" or "http"
    note: str | None = None  # why http fell back to sftp


async def ensure_package(
    s: Session,
    pkg: Package,
    work_dir: str,
    present: tuple[bool, bool],
    transfer_limit: float,
    command_limit: float,
    url: str | None = None,
) -> Delivery:
    """Make the package available on the machine.

    ``present`` is (archive with this checksum there, extracted) from the probe;
    the packages directory exists (made by the probe). With ``url`` the machine
    pulls the package (curl or wget); SFTP push is the fallback."""
    paths = RemotePaths.of(work_dir, pkg)
    have, extracted = present
    if have and extracted:
        return Delivery(paths.directory, None)
    if have:
        await s.run("package extract", extract_command(paths), transfer_limit)
        return Delivery(paths.directory, None)
    part = paths.archive + ".part"
    method, note = "sftp", None
    if url is not None:
        try:
            await s.run("package download", pull_command(url, part, transfer_limit), transfer_limit)
            method = "http"
        except RemoteCommandFailed as e:
            note = (
                "no curl or wget on the machine: pushed by SFTP"
                if e.exit_status == NO_DOWNLOADER
                else f"download failed ({e}): pushed by SFTP"
            )
    if method == "sftp":
        await s.put("package upload", str(pkg.path), part, transfer_limit)
    try:
        await s.run("package verify", verify_command(part, pkg.sha256), command_limit)
    except RemoteCommandFailed:
        raise MachineError(
            f"package verify failed: the file received by {method} has another SHA-256"
        ) from None
    move = f"mv -f -- {shlex.quote(part)} {shlex.quote(paths.archive)}"
    await s.run("package extract", f"{move} && {extract_command(paths)}", transfer_limit)
    return Delivery(paths.directory, method, note)


NO_DOWNLOADER = 97
"""Exit status of the pull command when the machine has neither curl nor wget."""


def pull_command(url: str, part: str, limit: float) -> str:
    """Download ``url`` to ``part`` with curl or wget; exit NO_DOWNLOADER if neither."""
    u, p, t = shlex.quote(url), shlex.quote(part), str(int(max(1, limit)))
    return (
        "if command -v curl >/dev/null 2>&1; then "
        f"curl -fsS --connect-timeout 10 --max-time {t} -o {p} {u}; "
        "elif command -v wget >/dev/null 2>&1; then "
        f"wget -q -T 30 -O {p} {u}; "
        f"else exit {NO_DOWNLOADER}; fi"
    )
