"""The API reads the admission webhook makes (few and bounded): Nodes by name (never a
list of all Nodes), the credential Secret's key names and value lengths (never the
values themselves kept), one list of NodeTasks."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.operators import in_
from lightkube.resources.core_v1 import Node, Secret

from penetrator.api import NAMESPACE
from penetrator.k8s.client import NodeTaskResource

NODE_LOOKUP_CONCURRENCY = 64
HOSTNAME_LABEL = "kubernetes.io/hostname"
HOSTNAME_CHUNK = 200


async def node_exists(client: AsyncClient, name: str) -> bool:
    try:
        await client.get(Node, name)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True


@dataclass
class NodeLookup:
    """Which names are Nodes; ``by_label``: how many were checked through the
    ``kubernetes.io/hostname`` label because the time budget for GETs ran out."""

    found: set[str] = field(default_factory=set)
    by_label: int = 0


async def nodes_exist(
    client: AsyncClient,
    names: list[str],
    *,
    budget: float | None = None,
    concurrency: int = NODE_LOOKUP_CONCURRENCY,
) -> NodeLookup:
    """Which of ``names`` are Nodes: one GET per name, ``concurrency`` at a time.

    Past ``budget`` seconds (an apiserver under load, thousands of names) the names
    not yet looked up are checked with a few LISTs by label selector
    ``kubernetes.io/hostname in (...)`` (the kubelet's label, the node name unless
    overridden), ``HOSTNAME_CHUNK`` names per request: never a list of all Nodes."""
    gate = asyncio.Semaphore(concurrency)
    result = NodeLookup()

    async def one(name: str) -> None:
        async with gate:
            if await node_exists(client, name):
                result.found.add(name)

    tasks = {asyncio.ensure_future(one(n)): n for n in names}
    if not tasks:
        return result
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if (e := t.exception()) is not None:
            raise e
    left = sorted(tasks[t] for t in pending)
    result.by_label = len(left)
    for i in range(0, len(left), HOSTNAME_CHUNK):
        chunk = left[i : i + HOSTNAME_CHUNK]
        async for node in client.list(Node, labels={HOSTNAME_LABEL: in_(chunk)}):
            if node.metadata and node.metadata.name:
                result.found.add(node.metadata.name)
            hostname = ((node.metadata.labels or {}) if node.metadata else {}).get(HOSTNAME_LABEL)
            if hostname:
                result.found.add(hostname)
    return result


async def credential_keys(
    client: AsyncClient, name: str, namespace: str = NAMESPACE
) -> dict[str, int] | None:
    """Key -> decoded length of the Secret's values; None if there is no such Secret."""
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return None
        raise
    keys: dict[str, int] = {}
    for key, value in (secret.data or {}).items():
        keys[key] = len(base64.b64decode(value or ""))
    for key, text in (secret.stringData or {}).items():  # never stored, but harmless
        keys[key] = len(text or "")
    return keys


async def list_tasks(client: AsyncClient) -> dict[str, dict[str, Any]]:
    """name -> body of every NodeTask (one list request, paged by the client)."""
    out: dict[str, dict[str, Any]] = {}
    async for task in client.list(NodeTaskResource):
        body: dict[str, Any] = task.to_dict()  # type: ignore[no-untyped-call]
        name = (body.get("metadata") or {}).get("name")
        if name:
            out[str(name)] = body
    return out
