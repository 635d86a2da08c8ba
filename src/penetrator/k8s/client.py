"""The one way the product reaches the API server: ``load_config`` (a kubeconfig
file and context, or in-cluster), ``make_client`` (lightkube's AsyncClient; the
user's CLI takes ``make_sync_client``), and ``NodeTaskResource``, the NodeTask as
a lightkube resource."""

from __future__ import annotations

from pathlib import Path

import httpx2
from lightkube import AsyncClient, Client, ConfigError, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.generic_resource import create_global_resource

from penetrator.api import GROUP, KIND, PLURAL, VERSION

NodeTaskResource = create_global_resource(GROUP, VERSION, KIND, PLURAL)


def load_config(kubeconfig: str | Path | None = None, context: str | None = None) -> SingleConfig:
    """``kubeconfig`` (its ``context``, or its current one), or in-cluster (the pod's
    service account and ``KUBERNETES_SERVICE_HOST``) when None. ``ConfigError`` says
    what is missing."""
    if kubeconfig is not None:
        config = KubeConfig.from_file(kubeconfig)
    else:
        try:
            config = KubeConfig.from_service_account()
        except KeyError as e:  # KUBERNETES_SERVICE_HOST/PORT: not in a pod
            raise ConfigError(f"not in a pod ({e.args[0]} is not set) and no kubeconfig") from None
    single = config.get(context_name=context)
    if single is None:
        raise ConfigError(f"kubeconfig {kubeconfig}: no context {context or '(current)'}")
    return single


def make_client(
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    field_manager: str | None = None,
    timeout: float | None = None,
) -> AsyncClient:
    """An async client (never the environment's proxies: the API server is ours)."""
    return AsyncClient(
        load_config(kubeconfig, context),
        field_manager=field_manager,
        trust_env=False,
        timeout=httpx2.Timeout(timeout) if timeout is not None else None,  # None: 10 s
    )


def make_sync_client(
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    field_manager: str | None = None,
) -> Client:
    """The same for the user's CLI, which does one request at a time."""
    return Client(load_config(kubeconfig, context), field_manager=field_manager, trust_env=False)
