"""The API calls of the user's CLI (``penetrator add/reinstall/status/watch/credential``):
connect as kubectl does (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``,
``--context``; in a pod its service account), create and read NodeTasks, read the
task's Events, create the credential Secret, probe the admission of tasks. Errors
become ``UserApiError`` with one readable line (the apiserver's or the webhook's
message), never a traceback."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
from lightkube import Client, ConfigError
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Secret

from penetrator.api import (
    API_VERSION,
    CREDENTIAL_PASSWORD_KEY,
    CREDENTIAL_SSHKEY_KEY,
    KIND,
    NAMESPACE,
)
from penetrator.k8s.client import NodeTaskResource, make_sync_client

FIELD_MANAGER = "penetrator-cli"


class UserApiError(Exception):
    """One line for the user; ``not_found`` when the object does not exist."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def describe(e: BaseException) -> str:
    """One line for an API or connection error."""
    if isinstance(e, ApiError):
        message = (e.status.message or e.status.reason or "").strip()
        return " ".join(message.split()) or f"HTTP {e.status.code}"
    if isinstance(e, httpx2.HTTPError):
        return f"cannot reach the API server: {e}"
    return f"{type(e).__name__}: {e}"


def connect(kubeconfig: str | Path | None = None, context: str | None = None) -> Client:
    """A client as kubectl would make it."""
    try:
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        default = Path.home() / ".kube" / "config"
        if path is None and default.exists():
            path = default
        return make_sync_client(path, context, field_manager=FIELD_MANAGER)
    except (ConfigError, OSError, ValueError, KeyError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        ctx = f" (context {context!r})" if context else ""
        raise UserApiError(f"cannot load kubeconfig {where}{ctx}: {e}") from None


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError as e:
        raise UserApiError(f"{what}: {describe(e)}", not_found=e.status.code == 404) from None
    except httpx2.HTTPError as e:
        raise UserApiError(f"{what}: {describe(e)}") from None


def create_task(client: Client, body: Mapping[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Create the NodeTask (``dry_run``: the server's answer without storing it)."""
    obj = NodeTaskResource.from_dict(dict(body))
    created = _call("cannot create the NodeTask", client.create, obj, dry_run=dry_run)
    out: dict[str, Any] = created.to_dict()
    return out


PROBE_TASK: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"generateName": "penetrator-check-"},
    "spec": {
        "nodeNamePrefix": "check",
        "targetMachines": ["192.0.2.1"],  # TEST-NET-1: never a real machine
        "sshCredential": "penetrator-check",
    },
}
"""Sent only as a server-side dry run: never stored, never installed."""

_REFUSED_BY_A_CHECK = ("denied the request", "denied request")
"""How a webhook's and a ValidatingAdmissionPolicy's refusal read."""


def admission_problem(client: Client) -> str | None:
    """Why the API server does not yet admit NodeTasks, or None when it does.

    A server-side dry run of ``PROBE_TASK`` goes through the same chain as a real
    task: admitted, or refused by penetrator's webhook or policy, both mean the chain
    answers. A webhook the API server cannot call (no ready endpoint, its CA not
    written yet), a CRD not yet served or an unreachable API server are worth waiting
    for; anything else (e.g. the user may not create tasks) raises ``UserApiError``."""
    try:
        admitted = client.create(NodeTaskResource.from_dict(PROBE_TASK), dry_run=True)
    except ApiError as e:
        return problem_of(e)
    except httpx2.HTTPError as e:
        return describe(e)
    if not (admitted.to_dict().get("spec") or {}).get("nodeNamesOverride"):
        # the webhook names every machine of a task it admits
        return "the API server admits NodeTasks without penetrator's webhook (not installed?)"
    return None


def await_admission(client: Client, seconds: float, interval: float = 2.0) -> str | None:
    """``admission_problem``, asked again every ``interval`` s for up to ``seconds``:
    None once tasks are admitted, else the last problem."""
    deadline = time.monotonic() + seconds
    while (problem := admission_problem(client)) is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return problem
        time.sleep(min(interval, left))
    return None


def problem_of(e: ApiError) -> str | None:
    """``admission_problem`` for the API server's answer ``e`` (pure)."""
    message = describe(e)
    code = e.status.code or 0
    if code == 404 or code >= 500:  # the CRD not served yet; the webhook not callable
        return message
    if code == 422 or any(s in message for s in _REFUSED_BY_A_CHECK):
        return None
    raise UserApiError(f"cannot dry-run a NodeTask: {message}")


def get_task(client: Client, name: str) -> dict[str, Any]:
    obj = _call(f"NodeTask {name}", client.get, NodeTaskResource, name)
    out: dict[str, Any] = obj.to_dict()
    return out


def task_events(client: Client, name: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Events about the task (the operator writes them to edge-system), oldest first."""
    events = _call(
        "cannot list events",
        lambda: list(
            client.list(
                Event,
                namespace=namespace,
                fields={"involvedObject.kind": KIND, "involvedObject.name": name},
            )
        ),
    )
    out = [e.to_dict() for e in events]
    out.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return out


def create_credential(
    client: Client, name: str, *, password: bytes | None = None, key: bytes | None = None
) -> None:
    """The Secret ``edge-system/<name>`` with key ``passwd`` or ``sshkey``."""
    if (password is None) == (key is None):
        raise ValueError("give exactly one of password or key")
    data_key = CREDENTIAL_PASSWORD_KEY if password is not None else CREDENTIAL_SSHKEY_KEY
    value = password if password is not None else key
    assert value is not None
    secret = Secret(
        metadata=ObjectMeta(
            name=name, namespace=NAMESPACE, labels={"app.kubernetes.io/name": "penetrator"}
        ),
        type="Opaque",
        data={data_key: base64.b64encode(value).decode()},
    )
    _call(f"cannot create Secret {NAMESPACE}/{name}", client.create, secret)
