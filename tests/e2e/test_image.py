"""The shipped image, built by scripts/image.sh (cached) and run with a real OCI
runtime (Debian's runc): its command answers, it runs as its non-root user, and
it holds no shell and none of the development tools."""

from __future__ import annotations

import json
import os
import subprocess
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from penetrator import __version__

REPO = Path(__file__).resolve().parents[2]
_ids = count(1)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The image's OCI layout (unpacked from the archive) and its config."""
    assert os.geteuid() == 0, "runc and umoci unpack need root"
    built = subprocess.run(
        ["bash", str(REPO / "scripts" / "image.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    archive = Path(built.stdout.strip().splitlines()[-1])
    assert archive.is_file()
    layout = tmp_path_factory.mktemp("image") / "oci"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    manifest = json.loads(_blob(layout, entry["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    return {
        "layout": layout,
        "tag": entry["annotations"]["org.opencontainers.image.ref.name"],
        "manifest": manifest,
        "config": config,
    }


def _blob(layout: Path, digest: str) -> str:
    algorithm, hex_digest = digest.split(":")
    return (layout / "blobs" / algorithm / hex_digest).read_text()


@pytest.fixture(scope="module")
def bundle(image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtime bundle (rootfs + config.json) unpacked by umoci from the image."""
    target = tmp_path_factory.mktemp("bundle") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{image['layout']}:{image['tag']}", str(target)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def run_in_image(bundle: Path, args: list[str] | None = None) -> str:
    """Runs the image's process (or `args` in its place) with runc; its stdout."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    if args is not None:
        spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))
    container = f"penetrator-image-{os.getpid()}-{next(_ids)}"
    done = subprocess.run(
        ["runc", "run", "--bundle", str(bundle), container],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_penetrator_version_runs_as_the_entrypoint(bundle: Path) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"][0] == "/usr/local/bin/penetrator"
    out = run_in_image(bundle, [*spec["process"]["args"], "--version"])
    assert out.strip() == f"penetrator, version {__version__}"


def test_it_runs_as_its_fixed_non_root_user(image: dict[str, Any], bundle: Path) -> None:
    assert image["config"]["config"]["User"] == "65532:65532"
    probe = "import os; print(os.getuid(), os.getgid())"
    out = run_in_image(bundle, ["/usr/bin/python3", "-c", probe])
    assert out.split() == ["65532", "65532"]


def test_it_is_labelled_with_version_and_source(image: dict[str, Any]) -> None:
    for labels in (image["manifest"]["annotations"], image["config"]["config"]["Labels"]):
        assert labels["org.opencontainers.image.version"] == __version__
        assert labels["org.opencontainers.image.source"]
        assert labels["org.opencontainers.image.revision"]


def test_no_development_tools_and_no_shell_inside(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    names = [p.relative_to(rootfs) for p in rootfs.rglob("*")]
    assert any(p.parts[-2:] == ("penetrator", "cli") for p in names)
    dev = [p for p in names if {"sandbox", "testenv"} & set(p.parts) or "penetrator_dev" in str(p)]
    assert dev == []
    # no shell, and no package manager (/var/lib/dpkg/status.d stays: it lists
    # the Debian packages for vulnerability scanners)
    tools = {"sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg"}
    assert [p for p in names if p.name in tools and not (rootfs / p).is_dir()] == []
