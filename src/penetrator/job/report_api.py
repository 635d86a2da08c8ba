"""The job's side of the results channel: the ledger view of the job's results
document (``penetrator.api.results``) written through the API into the task's
results ConfigMap, batched.

Usage (what ``penetrator job --report-configmap NAME`` does)::

    writer = ResultsWriter.from_environment(NAME, kubeconfig=None)  # in-cluster
    ledger = await writer.start()      # reads the document once, flushes every 2 s
    writer.observe(result)             # a MachineResult the job changes as it goes
    await writer.close(done=True)      # the last batch, with done=true

It keeps what the operator wrote (``round``, ``started``, every machine's
``attempts`` and the entries it does not run) and writes, for each machine it was
shown, the ``phase``, ``error`` and ``host_key`` of its result (the job's results
start from the ledger's, ``report.run_results``), and the document's ``updated``.
A failed write never fails the install: the batch stays pending and is retried at
the next flush. Errors must already be credential-free (the job redacts them); they
are cut to 200 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from penetrator.api import NAMESPACE
from penetrator.api.results import RESULTS_KEY, MachineResult, ResultsDoc
from penetrator.k8s.client import make_client

log = logging.getLogger(__name__)
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FIELD_MANAGER = "penetrator-job"


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
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.interval = interval
        self.ledger = ResultsDoc()  # what the operator wrote (read at start)
        self.doc = self.ledger  # what was last built for writing
        self._run: dict[str, MachineResult] = {}  # the job's results, by name
        self.writes = 0
        self.failed_writes = 0
        self._own_client = own_client
        self._dirty = False
        self._done = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._now = now

    @classmethod
    def from_environment(
        cls,
        name: str,
        kubeconfig: Path | None = None,
        namespace: str | None = None,
        interval: float = 2.0,
    ) -> ResultsWriter:
        """A kubeconfig file, or the pod's service account (in-cluster) when None."""
        client = make_client(kubeconfig, field_manager=FIELD_MANAGER)
        return cls(client, name, namespace or pod_namespace(), interval, own_client=True)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> ResultsDoc:
        """Read the operator's document once (missing or unusable: start empty), begin
        flushing every ``interval`` seconds; the ledger read."""
        try:
            cm = await self.client.get(ConfigMap, self.name, namespace=self.namespace)
            self.ledger = ResultsDoc.from_configmap_data(cm.data) or ResultsDoc()
            self.doc = self.ledger
        except ApiError as e:
            log.warning("results ConfigMap %s/%s: %s", self.namespace, self.name, e.status.code)
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop())
        return self.ledger

    async def close(self, done: bool = True) -> None:
        """Stop the loop and write the last batch (``done`` marks the job's end)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if done and not self._done:
            self._done = True
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

    def observe(self, result: MachineResult) -> None:
        """Note that a machine's result changed (written as it is at the next flush);
        fits ``Reporter.changed`` / ``finished``."""
        self._run[result.name] = result
        self._dirty = True

    def document(self) -> ResultsDoc:
        """The ledger with the results observed so far (without the run's details)."""
        doc = self.ledger.with_results(r.ledger() for r in self._run.values())
        return doc.model_copy(update={"done": self._done, "updated": self._now()})

    # --- writing -----------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write the document if anything changed; False when the write failed (what
        it held stays pending)."""
        async with self._lock:
            if not self._dirty:
                return True
            self.doc = self.document()
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
