"""`penetrator sandbox ...`: the local edge sandbox (development and demo only)."""

from __future__ import annotations

import click


@click.group()
def sandbox() -> None:
    """A local one-way network with NAT'd edge machines running real sshd."""
