"""`penetrator testenv ...`: the Go-built real control plane for tests."""

from __future__ import annotations

import click


@click.group()
def testenv() -> None:
    """A real kube-apiserver, etcd, controller-manager and scheduler, built from source."""
