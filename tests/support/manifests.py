"""NodeTask manifests as a user writes them (camelCase fields, as kubectl sends them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from penetrator.api import API_VERSION


def nodetask(
    name: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A NodeTask object: `spec` as given (camelCase fields), `metadata` beside the
    name, and `status` when given."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "NodeTask",
        "metadata": {"name": name, **(metadata or {})},
        "spec": dict(spec),
    }
    if status is not None:
        body["status"] = dict(status)
    return body


def nodetask_yaml(name: str, **fields: Any) -> str:
    """nodetask(...) as YAML, for `kubectl apply -f -`."""
    return yaml.safe_dump(nodetask(name, **fields))


def add_task(
    name: str,
    targets: list[str],
    proxy: str | None = None,
    *,
    prefix: str = "edge",
    credential: str = "login",
) -> dict[str, Any]:
    """An add task: `targets` named `prefix`-..., logged into with the Secret
    `credential`, through the proxy node `proxy` (direct when None)."""
    spec: dict[str, Any] = {
        "nodeNamePrefix": prefix,
        "targetMachines": targets,
        "sshCredential": credential,
    }
    if proxy is not None:
        spec["proxyNode"] = proxy
    return nodetask(name, **spec)


def add_task_yaml(
    name: str,
    targets: list[str],
    proxy: str | None = None,
    *,
    prefix: str = "edge",
    credential: str = "login",
) -> str:
    """add_task(...) as YAML, for `kubectl apply -f -`."""
    return yaml.safe_dump(add_task(name, targets, proxy, prefix=prefix, credential=credential))
