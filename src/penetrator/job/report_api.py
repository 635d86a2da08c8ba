"""The job's side of the results channel: per-machine results written through the
API into the task's results ConfigMap (``penetrator.api.results``), batched.

Usage (what ``penetrator job --report-configmap NAME`` does)::

    writer = ResultsWriter.from_environment(NAME, kubeconfig=None)  # in-cluster
    async with writer:                 # reads the document once, flushes every 2 s
        writer.record(name, ip, MachinePhase.CONNECTING)
        writer.observe(machine_result)  # any object with name, ip, phase, error
    # leaving the block writes the last batch with done=true

It keeps what the operator wrote (``round``, ``started``, every machine's
``attempts`` and the entries it does not run) and only changes ``phase``, ``error``
and ``updated`` of the machines it reports. A failed write never fails the
install: the batch stays pending and is retried at the next flush. Errors must
already be credential-free (the job redacts them); they are cut to 200 bytes.

With ``pins_configmap`` it also writes the host keys pinned in this run
(``pins()``: host -> fingerprint) into the task's host-key ConfigMap, key ``pins``
(``penetrator.api.hostkeys``), at the same flushes, whenever they changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from penetrator.api import NAMESPACE, MachinePhase
from penetrator.api.hostkeys import PINS_KEY, format_pins
from penetrator.api.results import RESULTS_KEY, MachineResult, ResultsDoc
from penetrator.k8s.client import make_client

log = logging.getLogger(__name__)
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FIELD_MANAGER = "penetrator-job"


class _Result(Protocol):
    name: str
    ip: str
    phase: MachinePhase
    error: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def pod_namespace() -> str:
    """POD_NAMESPACE (downward API), else the service account's, else edge-system."""
    env = os.environ.get("POD_NAMESPACE")
    if env:
        return env
    with contextlib.suppress(OSError):
        text = SA_NAMESPACE_FILE.read_text().strip()
        if text:
            return text
    return NAMESPACE


class ResultsWriter:
    """Batches per-machine results into the results ConfigMap ``name``."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        namespace: str = NAMESPACE,
        interval: float = 2.0,
        now: Callable[[], datetime] = _now,
        own_client: bool = False,
        pins_configmap: str | None = None,
        pins: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.interval = interval
        self.doc = ResultsDoc()
        self.writes = 0
        self.failed_writes = 0
        self._own_client = own_client
        self._dirty = False
        self._done = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._now = now
        self.pins_configmap = pins_configmap
        self._pins = pins
        self._pins_written = ""  # the text last written (the operator empties it per round)

    @classmethod
    def from_environment(
        cls,
        name: str,
        kubeconfig: Path | None = None,
        namespace: str | None = None,
        interval: float = 2.0,
        pins_configmap: str | None = None,
        pins: Callable[[], Mapping[str, str]] | None = None,
    ) -> ResultsWriter:
        """A kubeconfig file, or the pod's service account (in-cluster) when None."""
        client = make_client(kubeconfig, field_manager=FIELD_MANAGER)
        return cls(
            client,
            name,
            namespace or pod_namespace(),
            interval,
            own_client=True,
            pins_configmap=pins_configmap,
            pins=pins,
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Read the operator's document once (missing or unusable: start empty) and
        begin flushing every ``interval`` seconds."""
        try:
            cm = await self.client.get(ConfigMap, self.name, namespace=self.namespace)
            self.doc = ResultsDoc.from_configmap_data(cm.data) or ResultsDoc()
        except ApiError as e:
            log.warning("results ConfigMap %s/%s: %s", self.namespace, self.name, e.status.code)
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop())

    async def close(self, done: bool = True) -> None:
        """Stop the loop and write the last batch (``done`` marks the job's end)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if done and not self._done:
            self._done = True
            self.doc = self.doc.model_copy(update={"done": True})
            self._dirty = True
        await self.flush()
        if self._own_client:
            await self.client.close()

    async def __aenter__(self) -> ResultsWriter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(done=True)

    # --- recording -------------------------------------------------------------------

    def record(self, name: str, ip: str, phase: MachinePhase, error: str | None = None) -> None:
        """Note one machine's state (written at the next flush)."""
        old = self.doc.machines.get(name)
        entry = MachineResult(
            ip=ip,
            phase=phase,
            attempts=old.attempts if old is not None else 1,
            round=old.round if old is not None else self.doc.round,
            error=error,
            updated=self._now(),
        )
        if old is not None and (old.ip, old.phase, old.error) == (
            entry.ip,
            entry.phase,
            entry.error,
        ):
            return
        self.doc = self.doc.with_machine(name, entry)
        self._dirty = True

    def observe(self, result: _Result) -> None:
        """``record`` from an object with ``name``, ``ip``, ``phase``, ``error`` (the
        job's ``MachineResult``); fits ``Reporter.changed`` / ``finished``."""
        self.record(result.name, result.ip, result.phase, result.error)

    # --- writing -----------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write the document (and the pins) if anything changed; False when a write
        failed (what it held stays pending)."""
        pins_ok = await self._flush_pins()
        return await self._flush_results() and pins_ok

    async def _flush_pins(self) -> bool:
        if self.pins_configmap is None or self._pins is None:
            return True
        text = format_pins(self._pins())
        if text == self._pins_written:
            return True
        try:
            await self.client.patch(
                ConfigMap,
                self.pins_configmap,
                {"data": {PINS_KEY: text}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        except Exception as e:  # ApiError, httpx transport errors, timeouts
            code = e.status.code if isinstance(e, ApiError) else type(e).__name__
            log.warning("writing host-key pins to %s failed: %s", self.pins_configmap, code)
            return False
        self._pins_written = text
        return True

    async def _flush_results(self) -> bool:
        async with self._lock:
            if not self._dirty:
                return True
            body = {"data": {RESULTS_KEY: self.doc.to_json()}}
            self._dirty = False
            try:
                await self.client.patch(
                    ConfigMap,
                    self.name,
                    body,
                    namespace=self.namespace,
                    patch_type=PatchType.MERGE,
                )
            except Exception as e:  # ApiError, httpx transport errors, timeouts
                self._dirty = True
                self.failed_writes += 1
                code = e.status.code if isinstance(e, ApiError) else type(e).__name__
                log.warning("writing results to %s/%s failed: %s", self.namespace, self.name, code)
                return False
            self.writes += 1
            return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
