"""`penetrator operator`: run the NodeTask operator (wiring only).

The settings are read once, here: the ``--config`` file (the chart: the ConfigMap
``penetrator-settings``), then the environment's few overrides
(``penetrator.api.settings.ENV_OVERRIDES``), then these options; validated before
anything starts. A bad value stops the command with its field path (exit 2)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from penetrator.api.settings import Settings, SettingsError, load_settings

OPTION_PATHS: dict[str, tuple[str, ...]] = {
    "kubeconfig": ("kubeconfig",),
    "context": ("context",),
    "identity": ("identity",),
    "image": ("jobPod", "image"),
    "metrics_port": ("metricsPort",),
    "health_endpoint": ("healthEndpoint",),
    "poll_interval": ("reconcile", "pollInterval"),
    "max_attempts": ("reconcile", "maxAttempts"),
    "backoff_base": ("reconcile", "backoffBase"),
}
"""Each option's field in the settings tree."""


def read_settings(path: Path | None, options: dict[str, Any]) -> Settings:
    """The settings file (None: defaults), the environment's overrides, ``options``."""
    document: Any = None
    source = "the defaults"
    if path is not None:
        source = str(path)
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as e:
            raise SettingsError([f"{path}: cannot read: {e.strerror}"]) from None
        except yaml.YAMLError as e:
            raise SettingsError([f"{path}: not YAML: {e}"]) from None
    overrides = {OPTION_PATHS[k]: v for k, v in options.items() if v is not None}
    settings = load_settings(document, os.environ, overrides, source=source)
    if not settings.identity:  # neither set nor $HOSTNAME: this process
        settings = settings.model_copy(update={"identity": f"pid-{os.getpid()}"})
    return settings


@click.command()
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Settings file (YAML, kind: Settings; default: every default).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Cluster access (default: the pod's service account).",
)
@click.option("--context", help="The kubeconfig's context (default: its current one).")
@click.option("--identity", help="This replica's name in the Lease (default: $HOSTNAME).")
@click.option("--image", help="Image of the install Job.")
@click.option("--metrics-port", type=int, help="Prometheus metrics port (0: off).")
@click.option("--health", "health_endpoint", help="Liveness/readiness URL to serve.")
@click.option("--poll-interval", type=float, help="Seconds between looks at a running task.")
@click.option("--max-attempts", type=int, help="Rounds per machine before it is failed.")
@click.option("--backoff", "backoff_base", type=float, help="Seconds before the second round.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(config: Path | None, verbose: bool, **options: Any) -> None:
    """Run the NodeTask operator (settings: --config, then PENETRATOR_* overrides, then
    these options)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # one line per request / per Job event otherwise
    for noisy in ("httpx", "httpx2", "httpcore", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        settings = read_settings(config, options)
    except SettingsError as e:
        click.echo("error: invalid settings, the operator does not start:", err=True)
        for problem in e.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    from penetrator.operator.handlers import run

    run(settings)
