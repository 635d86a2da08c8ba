"""Leader election with a coordination.k8s.io Lease: two replicas never both act.

Every replica runs Kopf, but only the holder of the Lease reconciles. The holder
renews every ``duration / 3`` seconds; another replica takes over once the Lease
has not been renewed for ``duration`` seconds. Writes use the Lease's
resourceVersion, so two replicas racing for an expired Lease cannot both win.
A replica that cannot renew in time steps down before the Lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    def __init__(
        self,
        client: AsyncClient,
        name: str,
        namespace: str,
        identity: str,
        duration: float = 15.0,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self._valid_until = 0.0  # monotonic
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it now."""
        started = time.monotonic()
        now = _now()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise
            body = Lease(
                metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                spec=LeaseSpec(
                    holderIdentity=self.identity,
                    leaseDurationSeconds=int(self.duration),
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            try:
                await self.client.create(body)
            except ApiError as e2:
                if e2.status.code == 409:
                    return self._lost()
                raise
            return self._won(started)
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity
        renewed = spec.renewTime or spec.acquireTime
        duration = spec.leaseDurationSeconds or int(self.duration)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder != self.identity and not expired:
            return self._lost()
        transitions = (spec.leaseTransitions or 0) + (0 if holder == self.identity else 1)
        lease.spec = LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.duration),
            acquireTime=spec.acquireTime if holder == self.identity else now,
            renewTime=now,
            leaseTransitions=transitions,
        )
        try:
            await self.client.replace(lease)  # carries resourceVersion: optimistic
        except ApiError as e:
            if e.status.code == 409:
                return self._lost()
            raise
        return self._won(started)

    def _won(self, started: float) -> bool:
        was = self.is_leader
        # measured from before the request, and a third of the duration kept in hand
        self._valid_until = started + self.duration * 2 / 3
        if not was:
            log.info("leader: %s holds lease %s/%s", self.identity, self.namespace, self.name)
            self.changed.set()
        return True

    def _lost(self) -> bool:
        if self.is_leader:
            log.warning("lost lease %s/%s", self.namespace, self.name)
            self.changed.set()
        self._valid_until = 0.0
        return False

    async def run(self) -> None:
        while True:
            try:
                await self.try_acquire()
            except Exception as e:  # API unreachable: keep trying; step down on expiry
                log.warning("lease %s/%s: %s", self.namespace, self.name, type(e).__name__)
            await asyncio.sleep(self.duration / 3 if self.is_leader else self.duration / 5)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._valid_until = 0.0
