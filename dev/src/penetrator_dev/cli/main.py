"""The `penetrator-dev` command: the sandbox and the test control plane."""

from __future__ import annotations

import click

from penetrator import __version__
from penetrator_dev.cli.sandbox_cmd import sandbox
from penetrator_dev.cli.testenv_cmd import testenv


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="penetrator-dev")
def cli() -> None:
    """Development tools for penetrator: the one-way sandbox and the real control plane."""


cli.add_command(testenv)
cli.add_command(sandbox)


def main() -> None:
    cli()
