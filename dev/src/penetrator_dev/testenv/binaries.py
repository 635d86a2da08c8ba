"""Where the Go-built control-plane binaries are, building them on first use.

The recipe (`testenv/go.mod`, `testenv/build.sh`) lives in the repository;
the binaries live in a cache outside it, keyed by version and recipe hash.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kubeadm",
)


class BinariesUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def path(self, component: str) -> Path:
        return self.directory / component

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")


def recipe_dir() -> Path:
    """The repository's `testenv/` folder (testenv is a development tool of a checkout)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "testenv" / "build.sh"
        if candidate.is_file():
            return candidate.parent
    raise BinariesUnavailable(
        "testenv/build.sh not found: penetrator-dev testenv needs a checkout of the repository"
    )


def find_binaries(build: bool = True) -> Binaries:
    """Return the binaries, building them (once, cached) when `build` is true.

    PENETRATOR_K8S_BIN points at a directory holding all five, to skip the build.
    """
    override = os.environ.get("PENETRATOR_K8S_BIN")
    if override:
        found = Binaries(Path(override))
        _check(found)
        return found
    script = recipe_dir() / "build.sh"
    args = [str(script)] if build else [str(script), "--check"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BinariesUnavailable(
            f"building the control plane failed ({script}):\n{proc.stderr[-4000:]}"
        )
    found = Binaries(Path(proc.stdout.strip().splitlines()[-1]))
    _check(found)
    return found


def _check(found: Binaries) -> None:
    missing = [c for c in COMPONENTS if not os.access(found.path(c), os.X_OK)]
    if missing:
        raise BinariesUnavailable(f"{found.directory} lacks {', '.join(missing)}")
