"""Where the join packages come from (pure: models and the resolution rules).

Per architecture and per Kubernetes version (by default the cluster's), one of:

* ``job``: the paths of ``job.packages`` on the Job's own filesystem (a custom image
  with the packages inside; the sandbox's host processes);
* ``hostPath``: a directory on the proxy node, mounted read-only (opt-in:
  ``packages.hostPath.allowed``), holding ``<version>/<arch>/<one tarball>``;
* ``image``: an OCI image holding ``/packages/<version>/<arch>/<one tarball>``,
  mounted as an image volume (``mount: volume``; Kubernetes' ImageVolume, beta and
  on by default since v1.35, needs a runtime that supports it, e.g. containerd 2.1)
  or copied by an init container running the image's own ``cp`` (``mount: copy``);
* ``url``: per version and architecture an HTTP(S) URL and its required SHA-256,
  fetched once per Job on the proxy node (checked before any machine is touched)
  and served to the machines over the LAN like every package.

The settings' ``packages`` group is the cluster-wide choice; a task's
``spec.packages`` (an extension) overrides it field by field. The resolved choice
(``resolve``) is what the builders turn into volumes and the job config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

ARCHES: Final = ("amd64", "arm64")
VERSION_RE: Final = re.compile(r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?([-+][0-9A-Za-z.-]+)?$")
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
IMAGE_ROOT: Final = "/packages"
"""Where a package image keeps its tree (``/packages/<version>/<arch>/...``)."""
HOST_PATH_DEFAULT: Final = "/var/lib/penetrator/packages"
Source = Literal["job", "hostPath", "image", "url"]


class PackageError(ValueError):
    """The packages cannot be resolved; the message names the field and the fix."""


class _Group(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


def check_version(v: str) -> str:
    if len(v) > 64 or not VERSION_RE.fullmatch(v):
        raise ValueError(f"{v[:40]!r} is not a Kubernetes version like v1.37.2")
    return v if v.startswith("v") else "v" + v


class UrlPackage(_Group):
    """One package fetched over HTTP(S): its URL and SHA-256 (required)."""

    url: str = Field(min_length=8, max_length=2048)
    """http:// or https:// URL of the tarball."""
    sha256: str
    """Its SHA-256, 64 lowercase hex digits (checked before any machine is touched)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError(f"{v[:80]!r} is not an http:// or https:// URL")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.removeprefix("sha256:")
        if not SHA256_RE.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits (sha256sum's output)")
        return v


UrlTable = dict[str, dict[Literal["amd64", "arm64"], UrlPackage]]
"""Kubernetes version -> architecture -> URL and SHA-256."""


def _check_table(v: UrlTable) -> UrlTable:
    return {check_version(version): arches for version, arches in v.items()}


class HostPathSource(_Group):
    """A directory on the proxy node: ``<path>/<version>/<arch>/<one tarball>``."""

    allowed: bool = False
    """Opt-in: the Job may mount this directory of the proxy node (read-only)."""
    path: str = Field(default=HOST_PATH_DEFAULT, min_length=2, max_length=1024)
    """The directory (absolute)."""

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/") or "\0" in v:
            raise ValueError(f"{v[:80]!r} must be an absolute path without '..'")
        return v.rstrip("/") or "/"


class ImageSource(_Group):
    """An OCI image holding ``/packages/<version>/<arch>/<one tarball>``."""

    reference: str | None = Field(default=None, min_length=1, max_length=512)
    """The image (e.g. registry.example/edge-packages:v1.37.2)."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    mount: Literal["volume", "copy"] = "volume"
    """volume: an image volume (Kubernetes' ImageVolume; the runtime must support it);
    copy: an init container of the image copies the tree (the image needs ``cp``)."""
    copy_command: tuple[str, ...] = ("cp", "-R", f"{IMAGE_ROOT}/.")
    """mount copy: argv run in the package image; the target directory is appended."""


class PackageSettings(_Group):
    """Where the join packages come from (the cluster-wide choice; a task's
    ``spec.packages`` overrides it)."""

    source: Source = "job"
    """job (the paths of job.packages, on the Job's filesystem), hostPath, image or url."""
    host_path: HostPathSource = Field(default_factory=HostPathSource)
    image: ImageSource = Field(default_factory=ImageSource)
    urls: UrlTable = Field(default_factory=dict)
    """source url: Kubernetes version -> arch -> {url, sha256}."""
    download_size_limit: str = Field(default="2Gi", pattern=r"^[0-9]+(Ki|Mi|Gi)$")
    """source url: the size of the Job's download directory (an emptyDir)."""

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: UrlTable) -> UrlTable:
        return _check_table(v)


class TaskPackages(_Group):
    """A task's choice (``spec.packages``, an extension): replaces the settings' fields
    it gives. hostPath stays subject to the settings' ``hostPath.allowed``."""

    source: Source | None = None
    kubernetes_version: str | None = None
    """The packages' version (default: the settings' job.kubernetesVersion, else the
    cluster's)."""
    host_path: str | None = None
    """source hostPath: the directory on the proxy node."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """source image: the package image's reference."""
    urls: UrlTable | None = None

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        return None if v is None else check_version(v)

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: UrlTable | None) -> UrlTable | None:
        return None if v is None else _check_table(v)


@dataclass(frozen=True)
class ResolvedPackages:
    """The packages of one Job."""

    source: Source
    version: str
    host_path: str | None = None
    image: ImageSource | None = None
    urls: Mapping[str, UrlPackage] | None = None
    """source url: arch -> URL and SHA-256 for ``version``."""


def resolve(settings: PackageSettings, task: TaskPackages | None, version: str) -> ResolvedPackages:
    """The packages a task's Job uses for Kubernetes ``version`` (the task's own version
    wins). ``PackageError`` names the field to fix (before any Job is made)."""
    t = task or TaskPackages()
    version = check_version(t.kubernetes_version or version)
    source = t.source or settings.source
    where = "spec.packages" if t.source else "settings packages"
    if source == "hostPath":
        if not settings.host_path.allowed:
            raise PackageError(
                f"{where}.source hostPath: the settings' packages.hostPath.allowed is false; "
                "an administrator must opt in (the Job mounts a directory of the proxy node)"
            )
        path = HostPathSource(allowed=True, path=t.host_path or settings.host_path.path).path
        return ResolvedPackages("hostPath", version, host_path=path)
    if source == "image":
        image = settings.image
        if t.image:
            image = image.model_copy(update={"reference": t.image})
        if not image.reference:
            raise PackageError(
                f"{where}.source image: no image given; set packages.image.reference "
                "(or the task's spec.packages.image)"
            )
        return ResolvedPackages("image", version, image=image)
    if source == "url":
        table = t.urls if t.urls is not None else settings.urls
        urls = table.get(version)
        if not urls:
            known = ", ".join(sorted(table)) or "none"
            raise PackageError(
                f"{where}.urls: no package for Kubernetes {version} (versions listed: {known}); "
                f"add urls.{version}.<arch> with url and sha256"
            )
        return ResolvedPackages("url", version, urls={str(a): u for a, u in urls.items()})
    return ResolvedPackages("job", version)
