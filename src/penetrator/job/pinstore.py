"""The Job's side of the proxy node's host-key store (``penetrator.api.hostkeys``).

``load`` reads the store once at start: its pins are the keys this Job expects (a
store it cannot parse is an error naming the line, never an empty store). ``add``
makes a first-sight pin durable: it returns only after the API server accepted a
write holding it, so the runner can send a machine the join token only after the
machine's pin is stored where a later task sees it.

Writes are conditioned on the object's resourceVersion (another Job on the same
proxy node may write between our read and our write: 409, read again, merge again)
and batched: the pins that arrive while a write is under way go in the next one.
A pin is never replaced (``add_pin``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from penetrator.api.hostkeys import (
    STORE_PINS_KEY,
    PinRefused,
    add_pin,
    format_pins,
    parse_pins,
    store_problem,
)
from penetrator.job.cluster import Cluster, ClusterError

CONFLICT_RETRIES = 20
"""Writes lost to another writer before giving up (each one re-reads and merges)."""


class PinStoreError(Exception):
    """The store cannot be read or written (the message names it and says why)."""


@dataclass
class _Pending:
    host: str
    fingerprint: str
    done: asyncio.Future[None]


class PinStore:
    """One store ConfigMap ``namespace/name``, read and written through ``cluster``
    (its retries of transient API errors, each call within ``budget`` seconds)."""

    def __init__(self, cluster: Cluster, name: str, namespace: str, budget: float) -> None:
        self.cluster, self.name, self.namespace, self.budget = cluster, name, namespace, budget
        self.durable: dict[str, str] = {}
        """host pattern -> fingerprint: in the store (read at start, or written by us)."""
        self._pending: list[_Pending] = []
        self._lock = asyncio.Lock()
        self.writes = 0

    @property
    def where(self) -> str:
        return f"host-key store ConfigMap {self.namespace}/{self.name}"

    async def _read(self) -> tuple[dict[str, str], str | None]:
        async def get() -> ConfigMap:
            return await self.cluster.client.get(ConfigMap, self.name, namespace=self.namespace)

        try:
            cm = await self.cluster.call(f"get {self.where}", get, self.budget)
        except ClusterError as e:
            raise PinStoreError(str(e)) from None
        problem = store_problem(cm.data)
        if problem:  # never read as empty: every pin in it must still hold
            raise PinStoreError(f"{self.where}: {problem}")
        pins = parse_pins((cm.data or {}).get(STORE_PINS_KEY, ""))
        return pins, cm.metadata.resourceVersion if cm.metadata else None

    async def load(self) -> dict[str, str]:
        """The stored pins (``PinStoreError`` when the store is missing or unreadable)."""
        pins, _ = await self._read()
        self.durable = dict(pins)
        return pins

    async def add(self, host: str, fingerprint: str) -> None:
        """Return once ``host`` is pinned to ``fingerprint`` in the store; ``PinRefused``
        when it is pinned to another key (or the store is full), ``PinStoreError`` when
        the write fails."""
        if self.durable.get(host) == fingerprint:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(host, fingerprint, done))
        async with self._lock:
            if not done.done():  # not written by the batch before ours
                await self._write_batch()
        await done

    async def _write_batch(self) -> None:
        batch, self._pending = self._pending, []
        try:
            for _ in range(CONFLICT_RETRIES):
                if await self._try_write(batch):
                    return
            raise PinStoreError(f"{self.where}: {CONFLICT_RETRIES} writes lost to other writers")
        except Exception as e:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(e)

    async def _try_write(self, batch: list[_Pending]) -> bool:
        """One read-merge-write; False when another writer came first (409)."""
        pins, version = await self._read()
        accepted: list[_Pending] = []
        for p in batch:
            if p.done.done():
                continue
            try:
                pins = add_pin(pins, p.host, p.fingerprint)
                accepted.append(p)
            except PinRefused as e:
                p.done.set_exception(e)
        if not accepted:
            return True
        body = {
            "metadata": {"resourceVersion": version},
            "data": {STORE_PINS_KEY: format_pins(pins)},
        }

        async def patch() -> ConfigMap:
            return await self.cluster.client.patch(
                ConfigMap, self.name, body, namespace=self.namespace, patch_type=PatchType.MERGE
            )

        try:
            await self.cluster.call(f"patch {self.where}", patch, self.budget)
        except ClusterError as e:
            if e.answer.code == 409:
                return False
            raise PinStoreError(str(e)) from None
        self.writes += 1
        self.durable = dict(pins)
        for p in accepted:
            p.done.set_result(None)
        return True
