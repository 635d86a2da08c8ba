"""The API reads the admission webhook makes (few and bounded): Nodes by name (never a
list of all Nodes), the credential Secret's key names and value lengths (never the
values themselves kept), one list of NodeTasks."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource
from lightkube.resources.core_v1 import Node, Secret

from penetrator.api import GROUP, KIND, NAMESPACE, PLURAL, VERSION

NodeTaskResource = create_global_resource(GROUP, VERSION, KIND, PLURAL)
NODE_LOOKUP_CONCURRENCY = 32


async def node_exists(client: AsyncClient, name: str) -> bool:
    try:
        await client.get(Node, name)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True


async def nodes_exist(
    client: AsyncClient, names: list[str], concurrency: int = NODE_LOOKUP_CONCURRENCY
) -> set[str]:
    """Which of ``names`` are Nodes: one GET per name, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> str | None:
        async with gate:
            return name if await node_exists(client, name) else None

    found = await asyncio.gather(*(one(n) for n in names))
    return {n for n in found if n is not None}


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
