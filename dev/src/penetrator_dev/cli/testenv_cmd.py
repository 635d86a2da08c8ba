"""`penetrator-dev testenv ...`: the Go-built real control plane for tests."""

from __future__ import annotations

import shlex
import sys

import click

from penetrator_dev.testenv import session
from penetrator_dev.testenv.binaries import BinariesUnavailable, find_binaries
from penetrator_dev.testenv.controlplane import ControlPlaneError, ControlPlaneOptions

_name = click.option(
    "--name",
    default="default",
    show_default=True,
    help="Several control planes can run at once under different names.",
)


@click.group()
def testenv() -> None:
    """A real kube-apiserver, etcd, controller-manager and scheduler, built from source."""


@testenv.command()
def build() -> None:
    """Build (once, cached outside the repo) and print the binaries' directory."""
    try:
        click.echo(find_binaries().directory)
    except BinariesUnavailable as e:
        raise click.ClickException(str(e)) from e


@testenv.command()
@_name
@click.option("--bind-address", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, help="kube-apiserver's port (default: a free one).")
def up(name: str, bind_address: str, port: int) -> None:
    """Start a control plane and print the shell lines that point kubectl at it."""
    try:
        state = session.up(name, ControlPlaneOptions(bind_address=bind_address, port=port))
    except (BinariesUnavailable, ControlPlaneError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"export KUBECONFIG={shlex.quote(state.kubeconfig)}")
    click.echo(
        f"# control plane {name!r} at {state.server}; stop it with: "
        f"penetrator-dev testenv down --name {shlex.quote(name)}",
        err=False,
    )


@testenv.command()
@_name
def down(name: str) -> None:
    """Stop the control plane and remove its files."""
    if not session.down(name):
        click.echo(f"no control plane named {name!r}", err=True)
        sys.exit(0)
    click.echo(f"control plane {name!r} stopped")
