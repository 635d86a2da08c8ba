"""`penetrator job`: the installer payload the operator's Job runs (wiring only)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from penetrator.job.entry import (
    EXIT_CANNOT_START,
    TERMINATION_LOG,
    JobFiles,
    JobSetupError,
    run,
)

_path = click.Path(path_type=Path)


@click.command()
@click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Job config (YAML or JSON; the task's ConfigMap).",
)
@click.option(
    "--credentials",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Directory with passwd or sshkey, token, optional known_hosts.",
)
@click.option("--results", type=_path, help="Write the per-machine results (JSON) here.")
@click.option(
    "--known-hosts-out",
    type=_path,
    help="Host-key pins (tofu): loaded if present, written back at the end.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Cluster access (default: the pod's service account, if any; else none).",
)
@click.option(
    "--no-cluster",
    is_flag=True,
    help="Never talk to the API server; trust the install's exit code.",
)
@click.option(
    "--report-configmap",
    metavar="NAME",
    help="Also write the results into this ConfigMap (the pod's namespace), batched.",
)
@click.option(
    "--termination-log",
    type=_path,
    default=TERMINATION_LOG,
    show_default=True,
    help="Write why the job could not start here, one line (only if the file exists).",
)
def job(
    config: Path,
    credentials: Path,
    results: Path | None,
    known_hosts_out: Path | None,
    kubeconfig: Path | None,
    no_cluster: bool,
    report_configmap: str | None,
    termination_log: Path,
) -> None:
    """Install and join every machine of a job config over SSH (JSON lines on stdout)."""
    files = JobFiles(
        config,
        credentials,
        results,
        known_hosts_out,
        kubeconfig,
        not no_cluster,
        report_configmap,
        termination_log,
    )
    console = Console(stderr=True)
    try:
        if console.is_terminal:
            with Live(Text("starting"), console=console, refresh_per_second=4) as live:
                code = run(files, sys.stdout, lambda line: live.update(Text(line)))
        else:
            code = run(files, sys.stdout)
    except JobSetupError as e:
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        sys.exit(EXIT_CANNOT_START)
    sys.exit(code)
