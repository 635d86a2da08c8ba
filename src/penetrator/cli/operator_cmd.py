"""`penetrator operator`: run the NodeTask operator (wiring only)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from penetrator.operator.settings import Settings, SettingsError


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Cluster access (default: the pod's service account).",
)
@click.option("--namespace", help="Namespace of Jobs, ConfigMaps, Secrets, Events, the Lease.")
@click.option("--identity", help="This replica's name in the Lease (default: $HOSTNAME).")
@click.option("--image", help="Image of the install Job.")
@click.option("--metrics-port", type=int, help="Prometheus metrics port (0: off).")
@click.option("--health", "health_endpoint", help="Liveness/readiness URL to serve.")
@click.option("--poll-interval", type=float, help="Seconds between looks at a running task.")
@click.option("--max-attempts", type=int, help="Rounds per machine before it is failed.")
@click.option("--backoff", "backoff_base", type=float, help="Seconds before the second round.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(verbose: bool, **options: object) -> None:
    """Run the NodeTask operator (settings: PENETRATOR_* variables, then these options)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # one line per request / per Job event otherwise
    for noisy in ("httpx", "httpx2", "httpcore", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        settings = Settings.load(overrides=options)
    except SettingsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    from penetrator.operator.handlers import run

    run(settings)
