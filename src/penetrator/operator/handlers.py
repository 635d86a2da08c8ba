"""Kopf wiring (no decisions here): one daemon per NodeTask runs the reconcile
loop of ``Runtime.step``; Job events wake the task's daemon early; an index of all
tasks gives the machines held by older unfinished tasks (``plan.claims``). Only
the holder of the Lease acts; the other replicas' daemons wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from lightkube import AsyncClient, KubeConfig

from penetrator.api import GROUP, PLURAL, VERSION, NodeTask
from penetrator.k8s.builders import MANAGED_BY, TASK_NAME_LABEL
from penetrator.operator.lease import LeaseElector
from penetrator.operator.metrics import Metrics
from penetrator.operator.runtime import Runtime, _clean
from penetrator.operator.settings import Settings
from penetrator.plan.claims import older_claims, parse_tasks

log = logging.getLogger(__name__)
MAX_SLEEP = 60.0
"""Level-triggered: every task is looked at least this often."""
ERROR_SLEEP = 10.0


@dataclass
class _State:
    settings: Settings | None = None
    runtime: Runtime | None = None
    elector: LeaseElector | None = None
    metrics: Metrics = field(default_factory=Metrics)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)


STATE = _State()


def configure(settings: Settings) -> None:
    """Set the settings before ``kopf.run`` (the CLI does it)."""
    STATE.settings = settings
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)


def _settings() -> Settings:
    if STATE.settings is None:
        STATE.settings = Settings.load()
    return STATE.settings


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubeconfig, or in-cluster: the service account's token and CA with the
    server from KUBERNETES_SERVICE_HOST/PORT (as client-go does; Kopf's own helper
    dials kubernetes.default.svc, which needs cluster DNS)."""
    if _settings().kubeconfig is not None:
        return kopf.login_with_kubeconfig(**kwargs)
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return kopf.login_with_service_account(**kwargs)
    if ":" in host:
        host = f"[{host}]"
    with open(f"{SA_DIR}/token") as f:
        token = f.read().strip()
    namespace = None
    if os.path.exists(f"{SA_DIR}/namespace"):
        with open(f"{SA_DIR}/namespace") as f:
            namespace = f.read().strip() or None
    return kopf.ConnectionInfo(
        server=f"https://{host}:{port}",
        ca_path=f"{SA_DIR}/ca.crt",
        token=token,
        default_namespace=namespace,
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
    config = (
        KubeConfig.from_file(s.kubeconfig) if s.kubeconfig else KubeConfig.from_service_account()
    )
    client = AsyncClient(config, trust_env=False, field_manager=s.field_manager)
    STATE.runtime = Runtime(client, s, STATE.metrics)
    STATE.elector = LeaseElector(client, s.lease_name, s.namespace, s.identity, s.lease_seconds)
    STATE.elector.start()
    STATE.metrics.serve(s.metrics_port)
    log.info("penetrator operator %s started (namespace %s)", s.identity, s.namespace)


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


def run(settings: Settings) -> None:
    """Run the operator until interrupted (blocks)."""
    configure(settings)
    from penetrator.operator import webhook

    if webhook.enabled():
        webhook.register()  # the admission webhook (deploy/webhook.yaml)
    kopf.run(
        standalone=True,  # the Lease, not Kopf peering, decides who acts
        namespaces=[settings.namespace],
        liveness_endpoint=settings.health_endpoint,
    )
