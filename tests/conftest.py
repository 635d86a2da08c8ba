"""Shared fixtures: a real control plane (Go-built kube-apiserver, etcd,
kube-controller-manager, kube-scheduler) for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions
from support import REPO


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
    """The NodeTask CRD from deploy/, applied and established."""
    cluster.kubectl("apply", "-f", str(REPO / "deploy" / "crd.yaml"))
    cluster.kubectl(
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/nodetasks.nodetask.apps.superedge.io",
    )
