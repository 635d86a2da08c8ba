"""Kopf wiring (no decisions here): one daemon per NodeTask runs the reconcile
loop of ``Runtime.step``; Job events, and a results ConfigMap asking for an old
Node's removal, wake the task's daemon early; an index of all
tasks gives the machines held by older unfinished tasks (``plan.claims``); kubelet
client CSRs are reviewed as they come (``Runtime.review_csr``: one event per CSR,
whatever the size of the cluster). Only the holder of the Lease acts; the other
replicas' daemons wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from penetrator.api import GROUP, NAMESPACE, PLURAL, VERSION, NodeTask
from penetrator.api.results import RESULTS_KEY
from penetrator.api.settings import Settings
from penetrator.k8s.builders import MANAGED_BY, TASK_NAME_LABEL
from penetrator.k8s.client import NodeTaskResource, load_config, make_client
from penetrator.k8s.csr import KUBELET_CLIENT_SIGNER
from penetrator.operator.lease import LeaseElector
from penetrator.operator.metrics import Metrics
from penetrator.operator.runtime import Runtime, _clean
from penetrator.plan.claims import older_claims, parse_tasks

log = logging.getLogger(__name__)
MAX_SLEEP = 60.0
"""Level-triggered: every task is looked at least this often."""
ERROR_SLEEP = 10.0
CSR_PATIENCE = 600.0
"""Seconds a replica waits for the Lease to review a CSR it saw (a join waits longer
for its certificate than a failover takes)."""
CSR_TRIES = 5
SERVED_WAIT = 120.0
"""Seconds the start waits for the API server to serve NodeTasks."""


@dataclass
class _State:
    """What the handlers share; set by ``run`` (never read at import)."""

    settings: Settings | None = None
    runtime: Runtime | None = None
    elector: LeaseElector | None = None
    metrics: Metrics = field(default_factory=Metrics)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)


STATE = _State()


def _settings() -> Settings:
    if STATE.settings is None:
        raise RuntimeError("penetrator.operator.handlers.run(settings) sets the settings first")
    return STATE.settings


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf's connection from the same place as our client's (``load_config``): the
    settings' kubeconfig and context, or in-cluster (the service account's token and
    CA, the server from KUBERNETES_SERVICE_HOST/PORT, as client-go does; Kopf's own
    helper dials kubernetes.default.svc, which needs cluster DNS)."""
    s = _settings()
    config = load_config(s.kubeconfig, s.context)
    cluster, user = config.cluster, config.user
    ca_path = config.abs_file(cluster.certificate_auth) if cluster.certificate_auth else None
    cert_path = config.abs_file(user.client_cert) if user is not None and user.client_cert else None
    key_path = config.abs_file(user.client_key) if user is not None and user.client_key else None
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=str(ca_path) if ca_path else None,
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure,
        certificate_path=str(cert_path) if cert_path else None,
        certificate_data=user.client_cert_data if user is not None else None,
        private_key_path=str(key_path) if key_path else None,
        private_key_data=user.client_key_data if user is not None else None,
        username=user.username if user is not None else None,
        password=user.password if user is not None else None,
        token=user.token.strip() if user is not None and user.token else None,
        default_namespace=config.context.namespace,
        expiration=None,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    s = _settings()
    settings.posting.enabled = False  # our Events go to edge-system, written by us
    settings.watching.server_timeout = 300
    settings.persistence.finalizer = "nodetask.apps.superedge.io/operator"
    # Kopf keeps its state in annotations only: the status belongs to us (replaced whole).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.scanning.disabled = True  # no CRD watch: no RBAC on customresourcedefinitions
    client = make_client(s.kubeconfig, s.context, field_manager=s.field_manager)
    await wait_served(client, SERVED_WAIT)
    STATE.runtime = Runtime(client, s, STATE.metrics)
    STATE.elector = LeaseElector(
        client, s.lease.name, NAMESPACE, s.identity, s.lease.duration_seconds
    )
    STATE.elector.start()
    STATE.metrics.serve(s.metrics_port)
    log.info("penetrator operator %s started (namespace %s)", s.identity, NAMESPACE)


async def wait_served(client: AsyncClient, budget: float) -> None:
    """Until the API server serves NodeTasks (a list answers). Kopf looks up its
    resources once, right after the start-up handlers (no CRD watch: no RBAC on
    CRDs): an operator started while the API server (re)starts, before it serves
    the CRD, would watch no task for the rest of its life. So the start waits; after
    ``budget`` seconds it fails, and the process exits to be started again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    while True:
        try:
            async for _ in client.list(NodeTaskResource, chunk_size=1):
                break
            return
        except (ApiError, httpx2.HTTPError) as e:
            if loop.time() >= deadline:
                raise kopf.PermanentError(
                    f"the API server does not serve nodetasks after {budget:g}s ({_what(e)}); "
                    "is the CRD installed (charts/penetrator/crds)?"
                ) from None
            log.info("waiting for the API server to serve nodetasks: %s", _what(e))
        await asyncio.sleep(1.0)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if STATE.elector is not None:
        await STATE.elector.stop()
    if STATE.runtime is not None:
        await STATE.runtime.client.close()


@kopf.index(GROUP, VERSION, PLURAL)
def tasks_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeTask]:
    """name -> the task, typed: what ``older_claims`` needs (nothing for a body that
    is no NodeTask)."""
    return parse_tasks({name: _clean(body)})


def _claims(index: Mapping[Any, Any], me: str) -> dict[str, str]:
    tasks: dict[str, NodeTask] = {}
    for name, store in index.items():
        for value in store:
            tasks[str(name)] = value
    mine = tasks.get(me)
    return older_claims(tasks.values(), mine) if mine is not None else {}


async def _sleep(seconds: float, stopped: Any, wake: asyncio.Event) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not stopped and not wake.is_set():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(1.0, left))


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=15)
async def task_daemon(
    name: str,
    body: kopf.Body,
    stopped: Any,
    tasks_index: kopf.Index[Any, Any] | None = None,
    **_: Any,
) -> None:
    wake = STATE.wakeups.setdefault(name, asyncio.Event())
    try:
        while not stopped:
            wake.clear()
            runtime, elector = STATE.runtime, STATE.elector
            STATE.metrics.is_leader.set(1 if elector is not None and elector.is_leader else 0)
            if runtime is None or elector is None or not elector.is_leader:
                await _sleep(2.0, stopped, wake)
                continue
            try:
                delay = await runtime.step(body, _claims(tasks_index or {}, name))
            except Exception as e:
                STATE.metrics.api_errors.labels(operation="reconcile").inc()
                log.warning("task %s: reconcile failed: %s", name, _what(e))
                delay = ERROR_SLEEP
            await _sleep(min(delay if delay is not None else MAX_SLEEP, MAX_SLEEP), stopped, wake)
    finally:
        STATE.wakeups.pop(name, None)
        STATE.metrics.task_status(name, None)


def _what(e: BaseException) -> str:
    from lightkube.core.exceptions import ApiError

    from penetrator.operator.runtime import StepError

    if isinstance(e, StepError):
        return str(e)
    if isinstance(e, ApiError):
        return f"API error {e.status.code} ({e.status.reason})"
    return type(e).__name__


@kopf.on.event("batch", "v1", "jobs", labels=dict(MANAGED_BY))
def job_event(labels: Mapping[str, str], **_: Any) -> None:
    """A Job of ours changed: wake its task's daemon now instead of at its next poll."""
    task = labels.get(TASK_NAME_LABEL)
    if task and task in STATE.wakeups:
        STATE.wakeups[task].set()


def _awaits_removal(body: Mapping[str, Any], **_: Any) -> bool:
    """A task's results ConfigMap in which a machine waits for an old Node's removal
    (the field is written only when set; ``Runtime.remove_awaited_nodes`` decides)."""
    data = body.get("data") or {}
    return '"awaits_removal"' in str(data.get(RESULTS_KEY) or "")


@kopf.on.event("", "v1", "configmaps", labels=dict(MANAGED_BY), when=_awaits_removal)
def results_event(labels: Mapping[str, str], **_: Any) -> None:
    """The Job asks for an old Node's removal before it joins a machine under the same
    name: wake the task's daemon now (its step removes the Node), instead of at its next
    poll; one watch of our own ConfigMaps in edge-system, whatever the cluster's size."""
    task = labels.get(TASK_NAME_LABEL)
    if task and task in STATE.wakeups:
        STATE.wakeups[task].set()


def _kubelet_client(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    """A pending CSR for the kubelet client signer (others are never ours)."""
    return spec.get("signerName") == KUBELET_CLIENT_SIGNER and not status.get("certificate")


@kopf.on.event("certificates.k8s.io", "v1", "certificatesigningrequests", when=_kubelet_client)
async def csr_event(
    body: kopf.Body,
    type: str | None,
    tasks_index: kopf.Index[Any, Any] | None = None,
    **_: Any,
) -> None:
    """A kubelet's CSR: approved when a task's token asks for a node of its plan. A
    replica that does not hold the Lease waits for it (a CSR seen just before a
    failover is still reviewed, read afresh: one decided meanwhile is left alone); a
    failed review is tried again a few times (an event comes once)."""
    if type == "DELETED":
        return
    name = body.get("metadata", {}).get("name")
    loop = asyncio.get_running_loop()
    give_up = loop.time() + CSR_PATIENCE
    tries = 0
    while loop.time() < give_up:
        runtime, elector = STATE.runtime, STATE.elector
        if runtime is None or elector is None or not elector.is_leader:
            await asyncio.sleep(1.0)
            continue
        tasks = [t for store in (tasks_index or {}).values() for t in store]
        try:
            await runtime.review_csr(str(name), tasks)
            return
        except Exception as e:
            tries += 1
            STATE.metrics.api_errors.labels(operation="ApproveCSR").inc()
            log.warning("CSR %s: review failed (try %d): %s", name, tries, _what(e))
            if tries >= CSR_TRIES:
                return
            await asyncio.sleep(2.0 * tries)


def run(settings: Settings) -> None:
    """Run the operator with these (validated) settings until interrupted (blocks)."""
    STATE.settings = settings
    from penetrator.operator import webhook

    if settings.webhook.enabled:
        webhook.register(settings)  # the admission webhook (the chart's configurations)
    kopf.run(
        standalone=True,  # the Lease, not Kopf peering, decides who acts
        namespaces=[NAMESPACE],
        liveness_endpoint=settings.health_endpoint,
    )
