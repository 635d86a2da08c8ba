"""The job's view of the cluster (lightkube, async, read only): is a machine
already a labelled Node, which Nodes of other names have its address, wait for
Ready. Writing Nodes (a stale one removed, the task label) is the operator's: the
job's account may only read them.

Waiting for many Nodes shares one list call per interval (1,000 machines
waiting make one request every ``interval`` seconds, not 1,000).

The API server's transient answers (429 with its Retry-After, 500, 502, 503,
504, connection errors and timeouts) are retried with bounded backoff inside
the step's own time budget. 401 and 403 are retried a few times only
(``RetryPolicy.doubtful_tries``): an API server that has just restarted refuses
requests until its authentication and RBAC caches are filled (seen in the chaos
suite), while a real lack of rights must still fail soon. Every other answer (404
where it is not the answer asked for, 422, ...) is final at once. Either way the machine's error
says what the API server answered (``ClusterError``).
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from penetrator.api import NODE_LABEL, truncate_error
from penetrator.job.transport import MachineError, backoff_delay
from penetrator.k8s.client import make_client

FIELD_MANAGER = "penetrator-job"

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
T = TypeVar("T")

# ------------------------------------------------------------ retry policy (pure)

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
DOUBTFUL_STATUS = frozenset({401, 403})  # also what a restarting API server answers


@dataclass(frozen=True)
class ApiAnswer:
    """What one failed API call amounts to."""

    transient: bool
    code: int | None  # HTTP status; None when no answer came (connection, timeout)
    text: str  # short: "503 Service Unavailable: ..." or "cannot reach the API server: ..."
    retry_after: float | None = None  # the server's Retry-After, seconds
    doubtful: bool = False  # 401/403: final unless it passes after a few tries


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the API server sends whole seconds); None when
    absent or not a number of seconds (an HTTP date is ignored: backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None  # NaN is not a delay


def _cert_problem(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def classify(exc: BaseException) -> ApiAnswer | None:
    """An API error or a transport error as an ApiAnswer; None for anything
    else (a bug in our code, not an answer: it propagates as it is)."""
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code if exc.response is not None else None
        message = ""
        if isinstance(exc, ApiError):
            code = exc.status.code or code
            message = (exc.status.message or exc.status.reason or "").strip()
        code = code or 0
        reason = exc.response.reason_phrase if exc.response is not None else ""
        text = " ".join(f"{code} {reason}".split())
        if message:
            text += ": " + " ".join(message.split())
        after = None
        if code in (429, 503) and exc.response is not None:
            after = parse_retry_after(exc.response.headers.get("Retry-After"))
        return ApiAnswer(code in TRANSIENT_STATUS, code, text, after, code in DOUBTFUL_STATUS)
    if isinstance(exc, httpx2.TransportError):
        if _cert_problem(exc):
            return ApiAnswer(False, None, f"the API server's certificate was refused: {exc}")
        transient = isinstance(
            exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError
        )
        detail = str(exc) or type(exc).__name__
        return ApiAnswer(transient, None, f"cannot reach the API server: {detail}")
    if isinstance(exc, TimeoutError):
        return ApiAnswer(True, None, "no answer from the API server in time")
    if isinstance(exc, ConnectionError):
        return ApiAnswer(True, None, f"cannot reach the API server: {exc}")
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Waits between tries of one API call (or of the shared list)."""

    base: float = 0.5  # first backoff; doubles per try, with jitter
    cap: float = 8.0  # longest backoff
    retry_after_max: float = 30.0  # a longer Retry-After is shortened to this
    floor: float = 0.1  # never retry sooner (a Retry-After of 0 is not a hot loop)
    doubtful_tries: int = 6  # 401/403: about 20 s of backoff, then final

    def delay(self, tries: int, answer: ApiAnswer, left: float, rng: random.Random) -> float | None:
        """Seconds to wait before try ``tries + 1``; None to stop: the answer is
        final, or the wait (with the next try) would not fit in ``left``."""
        if not answer.transient and not (answer.doubtful and tries < self.doubtful_tries):
            return None
        if answer.retry_after is not None:
            d = min(answer.retry_after, self.retry_after_max)
        else:
            d = backoff_delay(tries, self.base, self.cap, rng)
        d = max(d, self.floor)
        return d if d < left else None


class ClusterError(MachineError):
    """A Kubernetes API call of the job failed for good (final answer, or still
    failing when its time budget ran out). The text names the call and the answer."""

    def __init__(self, what: str, answer: ApiAnswer, tries: int, budget: float) -> None:
        self.what, self.answer, self.tries = what, answer, tries
        if answer.transient:
            text = f"Kubernetes API: {what} still failing after {tries} tries in {budget:g}s: "
        else:
            text = f"Kubernetes API: {what} refused: "
        super().__init__(truncate_error(text + answer.text))


# ------------------------------------------------------------------- the view


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


DEFAULT_BUDGET = 60.0
"""Seconds for one call (get) when the caller gives none: the
job's ``timeouts.command``."""


class Cluster:
    def __init__(
        self,
        client: AsyncClient,
        interval: float = 2.0,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.interval = interval
        self.policy = policy or RetryPolicy()
        self.clock, self.sleep = clock, sleep
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._snapshot: dict[str, NodeInfo] = {}
        self._snapshot_at = -1e9
        self._refresh_lock = asyncio.Lock()
        self._list_failures = 0  # consecutive failed lists since the last good one
        self._list_answer: ApiAnswer | None = None  # the last failed list's answer
        self._next_list_at = -1e9
        self._list_error: ClusterError | None = None  # a final answer, said to every waiter

    @classmethod
    def from_kubeconfig(cls, path: Path | None = None, interval: float = 2.0) -> Cluster:
        """A kubeconfig file, or the pod's service account when ``path`` is None."""
        return cls(make_client(path, field_manager=FIELD_MANAGER), interval)

    @staticmethod
    def in_cluster() -> bool:
        return (
            bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            and (SERVICE_ACCOUNT_DIR / "token").is_file()
        )

    async def close(self) -> None:
        await self.client.close()

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], budget: float) -> T:
        """``fn()`` (one API request), tried again on transient answers while
        ``budget`` seconds last (each try is cut at the budget's end too);
        ClusterError when it fails for good."""
        deadline = self.clock() + budget
        tries = 0
        while True:
            tries += 1
            try:
                async with asyncio.timeout(max(deadline - self.clock(), 0.001)):
                    return await fn()
            except Exception as e:
                answer = classify(e)
                if answer is None:
                    raise
                wait = self.policy.delay(tries, answer, deadline - self.clock(), self.rng)
                if wait is None:
                    raise ClusterError(what, answer, tries, budget) from None
            await self.sleep(wait)

    async def get_node(self, name: str, budget: float = DEFAULT_BUDGET) -> NodeInfo | None:
        async def get() -> NodeInfo | None:
            try:
                return node_info(await self.client.get(Node, name))
            except ApiError as e:
                if e.status.code == 404:
                    return None
                raise

        return await self.call(f"get node {name}", get, budget)

    async def list_nodes(self) -> list[NodeInfo]:
        """One list of every Node (no retry: see _refresh)."""
        return [node_info(n) async for n in self.client.list(Node)]

    async def nodes_with_ip(self, ip: str) -> list[NodeInfo]:
        return [n for n in await self.list_nodes() if ip in n.addresses]

    async def _refresh(self) -> dict[str, NodeInfo]:
        """The shared snapshot; listed again when older than ``interval`` and not
        backing off. A transient failure keeps the previous snapshot and puts the
        next list off (Retry-After honoured, bounded); a final one is raised to
        every caller until a later list succeeds (tried again each interval)."""
        async with self._refresh_lock:
            now = self.clock()
            if now - self._snapshot_at >= self.interval and now >= self._next_list_at:
                try:  # bounded by the client's own timeouts (10 s without progress)
                    nodes = await self.list_nodes()
                except Exception as e:
                    answer = classify(e)
                    if answer is None:
                        raise
                    self._list_failures += 1
                    self._list_answer = answer
                    wait = self.policy.delay(self._list_failures, answer, float("inf"), self.rng)
                    self._next_list_at = self.clock() + max(wait or 0.0, self.interval)
                    self._list_error = (
                        None
                        if answer.transient
                        else ClusterError("list nodes", answer, self._list_failures, 0)
                    )
                else:
                    self._snapshot = {n.name: n for n in nodes}
                    self._snapshot_at = self.clock()
                    self._list_failures, self._list_answer, self._list_error = 0, None, None
            if self._list_error is not None:
                raise self._list_error
            return self._snapshot

    async def stale_by_address(
        self, name: str, ip: str, task_label: str, budget: float = DEFAULT_BUDGET
    ) -> list[str]:
        """Nodes of other names that have ``ip`` and lack this task's label: what a
        renamed machine leaves behind. The job only reports them (the operator deletes
        them once the machine joined). Uses the shared snapshot (at most ``interval``
        old, from a list that succeeded): 1,000 machines do not list all Nodes 1,000
        times."""
        deadline = self.clock() + budget
        snap = await self._fresh_snapshot(deadline, budget)
        return sorted(
            n.name
            for n in snap.values()
            if n.name != name and ip in n.addresses and not n.labelled(task_label)
        )

    async def _fresh_snapshot(self, deadline: float, budget: float) -> dict[str, NodeInfo]:
        """The shared snapshot once the last list succeeded (waiting out failed
        lists until ``deadline``)."""
        while True:
            snap = await self._refresh()
            if self._list_failures == 0:
                return snap
            left = deadline - self.clock()
            wait = max(self._next_list_at - self.clock(), 0.0)
            if wait >= left:
                assert self._list_answer is not None
                raise ClusterError("list nodes", self._list_answer, self._list_failures, budget)
            await self.sleep(max(wait, 0.01))

    async def stale_same_name(
        self, name: str, task_label: str, budget: float = DEFAULT_BUDGET
    ) -> bool:
        """A Node named ``name`` exists without this task's label (the shared snapshot):
        what a machine reinstalled under its own name leaves, which the real ``kubeadm
        join`` refuses to replace while it is Ready. The operator removes it on request
        (the job may not write Nodes)."""
        snap = await self._fresh_snapshot(self.clock() + budget, budget)
        node = snap.get(name)
        return node is not None and not node.labelled(task_label)

    async def wait_gone(self, name: str, limit: float) -> None:
        """Until a list of Nodes (the shared snapshot) lacks ``name``; TimeoutError after
        ``limit`` seconds, ClusterError when the API server refuses the list for good."""
        deadline = self.clock() + limit
        while True:
            snap = await self._refresh()
            if name not in snap and self._list_failures == 0:
                return
            left = deadline - self.clock()
            if left <= 0:
                raise TimeoutError(truncate_error(f"node {name} still there after {limit:g}s"))
            await self.sleep(min(self.interval, left))

    async def wait_ready(self, name: str, limit: float) -> NodeInfo:
        """Until the Node exists and is Ready; TimeoutError after ``limit`` seconds
        (saying so when the lists of Nodes were failing), ClusterError when the
        API server refuses the list for good."""
        deadline = self.clock() + limit
        while True:
            snap = await self._refresh()
            n = snap.get(name)
            if n is not None and n.ready:
                return n
            left = deadline - self.clock()
            if left <= 0:
                state = "not registered" if n is None else "registered but not Ready"
                why = ""
                if self._list_answer is not None:
                    why = (
                        f" (the last {self._list_failures} lists of Nodes failed: "
                        f"{self._list_answer.text})"
                    )
                raise TimeoutError(truncate_error(f"node {name} {state} after {limit:g}s{why}"))
            await self.sleep(min(self.interval, left))
