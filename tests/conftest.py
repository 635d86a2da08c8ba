"""Shared fixtures: a real control plane (Go-built kube-apiserver, etcd,
kube-controller-manager, kube-scheduler) for the whole test session."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TypeVar

import pytest

from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions
from support import REPO

R = TypeVar("R", pytest.TestReport, pytest.CollectReport)


def _no_skip(report: R) -> R:
    """A skip is a failure here: a test that cannot run on this machine (a missing
    tool, no root) says so in red, never silently."""
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and no test may skip: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    return _no_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    return _no_skip((yield))


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
