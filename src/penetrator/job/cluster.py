"""The job's view of the cluster (lightkube, async): is a machine already a
labelled Node, delete a stale Node, wait for Ready, add the task label.

Waiting for many Nodes shares one list call per interval (1,000 machines
waiting make one request every ``interval`` seconds, not 1,000).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from penetrator.api import NODE_LABEL

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    addresses: tuple[str, ...] = ()
    ready: bool = False

    def labelled(self, task_label: str) -> bool:
        return self.labels.get(NODE_LABEL) == task_label


def node_info(node: Any) -> NodeInfo:
    meta = node.metadata
    status = node.status
    addresses = tuple(a.address for a in (status.addresses or [])) if status else ()
    ready = False
    if status and status.conditions:
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
    return NodeInfo(meta.name, dict(meta.labels or {}), addresses, ready)


class Cluster:
    def __init__(self, client: AsyncClient, interval: float = 2.0) -> None:
        self.client = client
        self.interval = interval
        self._snapshot: dict[str, NodeInfo] = {}
        self._snapshot_at = -1e9
        self._refresh_lock = asyncio.Lock()

    @classmethod
    def from_kubeconfig(cls, path: Path | None = None, interval: float = 2.0) -> Cluster:
        """A kubeconfig file, or the pod's service account when ``path`` is None."""
        config = KubeConfig.from_file(path) if path else KubeConfig.from_service_account()
        return cls(AsyncClient(config, trust_env=False, field_manager="penetrator-job"), interval)

    @staticmethod
    def in_cluster() -> bool:
        return (
            bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            and (SERVICE_ACCOUNT_DIR / "token").is_file()
        )

    async def close(self) -> None:
        await self.client.close()

    async def get_node(self, name: str) -> NodeInfo | None:
        try:
            return node_info(await self.client.get(Node, name))
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    async def list_nodes(self) -> list[NodeInfo]:
        return [node_info(n) async for n in self.client.list(Node)]

    async def nodes_with_ip(self, ip: str) -> list[NodeInfo]:
        return [n for n in await self.list_nodes() if ip in n.addresses]

    async def delete_node(self, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self.client.delete(Node, name)
        except ApiError as e:
            if e.status.code == 404:
                return False
            raise
        return True

    async def delete_stale(self, name: str, ip: str, task_label: str) -> list[str]:
        """Before a (re)install: remove a Node of this name or this IP that does not
        carry this task's label. Returns the names deleted. Uses the shared snapshot
        (at most ``interval`` old): 1,000 machines do not list all Nodes 1,000 times."""
        gone: list[str] = []
        for n in list((await self._refresh()).values()):
            stale = (n.name == name or ip in n.addresses) and not n.labelled(task_label)
            if stale and await self.delete_node(n.name):
                gone.append(n.name)
        return gone

    async def label_node(self, name: str, task_label: str) -> None:
        patch = {"metadata": {"labels": {NODE_LABEL: task_label}}}
        await self.client.patch(Node, name, patch, patch_type=PatchType.MERGE)

    async def _refresh(self) -> dict[str, NodeInfo]:
        async with self._refresh_lock:
            if time.monotonic() - self._snapshot_at >= self.interval:
                self._snapshot = {n.name: n for n in await self.list_nodes()}
                self._snapshot_at = time.monotonic()
            return self._snapshot

    async def wait_ready(self, name: str, limit: float) -> NodeInfo:
        """Until the Node exists and is Ready; TimeoutError after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while True:
            snap = await self._refresh()
            n = snap.get(name)
            if n is not None and n.ready:
                return n
            left = deadline - time.monotonic()
            if left <= 0:
                state = "not registered" if n is None else "registered but not Ready"
                raise TimeoutError(f"node {name} {state} after {limit:g}s")
            await asyncio.sleep(min(self.interval, left))
