"""Shared fixtures: a real control plane (Go-built kube-apiserver, etcd,
kube-controller-manager, kube-scheduler) for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """One control plane for the session; tests clean up what they create."""
    cp = ControlPlane(ControlPlaneOptions(die_with_parent=True))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def crd(cluster: ControlPlane) -> None:
    """The NodeTask CRD (the chart's), applied and established."""
    cluster.kubectl("apply", "-f", str(REPO / "charts" / "penetrator" / "crds" / "nodetasks.yaml"))
    cluster.kubectl(
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/nodetasks.nodetask.apps.superedge.io",
    )
