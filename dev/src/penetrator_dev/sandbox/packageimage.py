"""A package image for real nodes (packages.source ``image``): an OCI archive holding
``/packages/<version>/<arch>/<tarball>`` and Debian's busybox-static as ``/bin/cp``
(the product's ``mount: copy`` init container runs ``cp -R /packages/. <dir>``), built
with umoci (no registry, no daemon) and imported into a node's containerd like the
sandbox's other images (``realnode.import_image``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from penetrator_dev.sandbox import kubeletnode, realnode

PACKAGE_IMAGE_BASE = "docker.io/library/penetrator-sandbox-packages"


def package_image(version: str, packages: dict[str, Path]) -> Path:
    """The OCI archive of a package image: the sandbox's busybox image (its ``cp``
    copies the packages in an init container) plus ``packages`` (arch -> tarball)
    under ``/packages/<version>/<arch>/``; cached by its inputs."""
    base = kubeletnode.busybox_archive()
    h = hashlib.sha256(base.name.encode() + version.encode())
    for arch in sorted(packages):
        h.update(arch.encode() + packages[arch].name.encode() + packages[arch].read_bytes())
    out = kubeletnode.cache_dir() / f"package-image-{version}-{h.hexdigest()[:12]}.tar"
    files = {f"/packages/{version}/{a}/{p.name}": p for a, p in packages.items()}
    return kubeletnode.with_layer(base, files, out, base_tag="1")


def import_package_image(sandbox: str, nodes: list[str], archive: Path) -> str:
    """Import the package image into these nodes' containerd; its reference as a pod
    names it (pulled IfNotPresent: found, never fetched)."""
    for node in nodes:
        realnode.import_image(sandbox, node, archive, PACKAGE_IMAGE_BASE)
    return f"{PACKAGE_IMAGE_BASE.rsplit('/', 1)[1]}:{realnode.image_tag(archive)}"
