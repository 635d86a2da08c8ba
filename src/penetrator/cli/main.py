"""The `penetrator` command (also installed as the kubectl plugin `kubectl-penetrator`).

Only argument parsing and presentation live here; every subcommand calls into a
library package that tests use directly.
"""

from __future__ import annotations

import click

from penetrator import __version__
from penetrator.cli.job_cmd import job
from penetrator.cli.operator_cmd import operator
from penetrator.cli.user_cmd import add, check, credential, reinstall, status, watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="penetrator")
def cli() -> None:
    """Add and reinstall edge machines behind NAT as Kubernetes nodes, from the cloud."""


cli.add_command(job)
cli.add_command(operator)
for _command in (add, reinstall, status, watch, credential, check):
    cli.add_command(_command)


def main() -> None:
    cli()
