"""A package image for real nodes (packages.source ``image``): an OCI archive holding
``/packages/<version>/<arch>/<tarball>`` and Debian's busybox-static as ``/bin/cp``
(the product's ``mount: copy`` init container runs ``cp -R /packages/. <dir>``), built
with umoci (no registry, no daemon) and imported into a node's containerd like the
sandbox's other images (``realnode.import_image``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from penetrator_dev.sandbox import realnode

PACKAGE_IMAGE_BASE = "docker.io/library/penetrator-sandbox-packages"


def package_image(version: str, packages: dict[str, Path]) -> Path:
    """The OCI archive of a package image with ``packages`` (arch -> tarball) under
    ``/packages/<version>/<arch>/``; cached by its inputs (its tag is their hash)."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise realnode.RealNodeError(
            "/bin/busybox missing: install busybox-static (scripts/setup.sh)"
        )
    h = hashlib.sha256(busybox.read_bytes() + version.encode())
    for arch in sorted(packages):
        h.update(arch.encode() + packages[arch].name.encode() + packages[arch].read_bytes())
    tag = f"{version}-{h.hexdigest()[:12]}"
    archive = realnode.cache_dir() / f"package-image-{tag}.tar"
    if archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="package-image-", dir=archive.parent) as tmp:
        layout, bundle = f"{tmp}/oci", f"{tmp}/bundle"
        image = f"{layout}:{tag}"
        realnode._run(["umoci", "init", "--layout", layout])
        realnode._run(["umoci", "new", "--image", image])
        realnode._run(["umoci", "unpack", "--image", image, bundle])
        root = Path(bundle) / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        (root / "bin" / "cp").symlink_to("busybox")
        for arch, tarball in packages.items():
            d = root / "packages" / version / arch
            d.mkdir(parents=True)
            shutil.copyfile(tarball, d / tarball.name)
            (d / tarball.name).chmod(0o644)
        realnode._run(["umoci", "repack", "--image", image, bundle])
        realnode._run(["umoci", "config", "--image", image, "--config.env=PATH=/bin"])
        realnode._run(["tar", "--owner=0", "--group=0", "-C", layout, "-cf", f"{tmp}/p.tar", "."])
        os.replace(f"{tmp}/p.tar", archive)
    return archive


def import_package_image(sandbox: str, nodes: list[str], archive: Path) -> str:
    """Import the package image into these nodes' containerd; its reference as a pod
    names it (pulled IfNotPresent: found, never fetched)."""
    for node in nodes:
        realnode.import_image(sandbox, node, archive, PACKAGE_IMAGE_BASE)
    return f"{PACKAGE_IMAGE_BASE.rsplit('/', 1)[1]}:{realnode.image_tag(archive)}"
