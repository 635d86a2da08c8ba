"""One reconcile of one task: observe, decide (``plan.reconcile``), apply.

Observing costs a fixed number of requests, whatever the size of the cluster: the
Nodes carrying the task's label (one list by label selector), the task's Job (one
get), its results ConfigMap (one get). Other tasks come from the Kopf index. Every
write is a server-side apply with our field manager, except the Job (create: a
second Job of the same name is refused by the API server) and the status (apply on
the status subresource).

Nothing secret is logged: exceptions are reported by type and HTTP status only.
"""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Node, Secret
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import CascadeType, PatchType
from pydantic import ValidationError

from penetrator.api import (
    CREDENTIAL_PASSWORD_KEY,
    CREDENTIAL_SSHKEY_KEY,
    NAMESPACE,
    NODE_LABEL,
    Condition,
    NodeTask,
    NodeTaskStatus,
    TaskPhase,
)
from penetrator.api.hostkeys import SECRET_PINS_KEY, learned_pins, merge_pins, parse_pins
from penetrator.api.results import ResultsDoc
from penetrator.api.settings import Settings
from penetrator.k8s.builders import (
    KNOWN_HOSTS_KEY,
    ClusterInfo,
    build_configmap,
    build_job,
    build_job_config,
    build_job_role,
    build_job_role_binding,
    build_results_configmap,
    build_secret,
    results_name,
    secret_name,
)
from penetrator.k8s.client import NodeTaskResource
from penetrator.k8s.clusterinfo import read_cluster_info
from penetrator.k8s.events import build_events, task_reference
from penetrator.k8s.observe import installed_nodes, observe_job
from penetrator.k8s.tokens import ensure_bootstrap_token
from penetrator.operator.metrics import Metrics
from penetrator.plan.prepare import initial_results, planned_machines, prepare
from penetrator.plan.reconcile import (
    PROGRESSING,
    ApplyConfigMap,
    ApplySecret,
    CreateJob,
    Decision,
    DeleteJob,
    EmitEvent,
    ObservedJob,
    RequeueAfter,
    WriteResults,
    reconcile,
)

log = logging.getLogger(__name__)
USER_ERROR_REQUEUE = 30.0


class UserError(Exception):
    """Something the user must fix (missing credential Secret, ...): an Event, a
    condition, and a retry later. The message holds no secret."""


def _describe(e: BaseException, detail: bool = True) -> str:
    """For logs: the HTTP status and, unless the request carried a secret, the API
    server's message (it names fields; our other objects hold no secret)."""
    if isinstance(e, ApiError):
        text = f"API error {e.status.code} ({e.status.reason})"
        if detail and e.status.message:
            text += f": {e.status.message[:500]}"
        return text
    return type(e).__name__


class StepError(Exception):
    """One action of a decision failed; the message is safe to log."""


class Runtime:
    """The operator's state that outlives one reconcile: the client, settings,
    metrics and the cluster-info cache. Holds no per-task state."""

    def __init__(self, client: AsyncClient, settings: Settings, metrics: Metrics) -> None:
        self.client = client
        self.settings = settings
        self.metrics = metrics
        self.rsettings = settings.reconcile
        self.rng = random.SystemRandom()
        self._cluster: ClusterInfo | None = None
        self.requests = 0  # API requests made (bench: per reconcile)

    # --- observe --------------------------------------------------------------------------

    async def _get_optional(self, res: Any, name: str, namespace: str) -> Any | None:
        self.requests += 1
        try:
            return await self.client.get(res, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    async def observe(
        self, task: NodeTask
    ) -> tuple[dict[str, str], ObservedJob | None, ResultsDoc | None]:
        assert task.task_label
        assert task.job_name
        self.requests += 1
        nodes = [n async for n in self.client.list(Node, labels={NODE_LABEL: task.task_label})]
        installed = installed_nodes(nodes, task.task_label)
        job_obj = await self._get_optional(Job, task.job_name, NAMESPACE)
        job = observe_job(job_obj) if job_obj is not None else None
        cm = await self._get_optional(ConfigMap, results_name(task), NAMESPACE)
        doc = ResultsDoc.from_configmap_data(cm.data) if cm is not None else None
        return installed, job, doc

    # --- the step ---------------------------------------------------------------------------

    async def step(
        self, body: Mapping[str, Any], busy: Mapping[str, str] | None = None
    ) -> float | None:
        """Reconcile the task ``body`` once; the seconds until the next step (None:
        only on events)."""
        self.metrics.reconciles.inc()
        task = NodeTask.from_dict(_clean(body))
        prep = prepare(task, self.rng)
        if prep is not None:
            await self._patch_task(task.name, prep.patch())
            return 0.5  # the next step sees the prepared task
        installed, job, doc = await self.observe(task)
        if not planned_machines(task, doc) and (doc is None or doc.round == 0):
            first = initial_results(task, self.rng)
            if first is not None:  # an add task without webhook: record the names once
                await self._apply_one(task, WriteResults(first))
                doc = first
        now = datetime.now(UTC)
        decision = reconcile(task, installed, job, doc, now, self.rsettings, busy)
        requeue = decision.requeue_after
        status = decision.status
        try:
            await self.apply(task, decision)
        except (UserError, StepError) as e:
            # Shown on the task, not only in our log: the user must fix something
            # (CannotStart), or the API server refused a write (ApiRefused: a quota,
            # an admission policy, ...); the step is retried.
            reason = "CannotStart" if isinstance(e, UserError) else "ApiRefused"
            status = _not_progressing(task, status, reason, str(e), now)
            old = task.status.condition(PROGRESSING)
            if old is None or (old.reason, old.message) != (reason, str(e)):
                await self.event(task, "Warning", reason, str(e))  # once per cause
            requeue = USER_ERROR_REQUEUE
        await self.write_status(task, status)
        self.metrics.task_status(task.name, status)
        if decision.round_finished is not None and doc is not None and doc.started is not None:
            self.metrics.rounds_finished.inc()
            self.metrics.round_duration.observe(max(0.0, (now - doc.started).total_seconds()))
        return requeue

    async def apply(self, task: NodeTask, decision: Decision) -> None:
        for action in decision.actions:
            try:
                await self._apply_one(task, action)
            except ApiError as e:
                what = type(action).__name__
                self.metrics.api_errors.labels(operation=what).inc()
                if isinstance(action, CreateJob) and e.status.code == 409:
                    log.info("task %s: job already exists; waiting for it", task.name)
                    return
                detail = not isinstance(action, ApplySecret)
                raise StepError(f"{what}: {_describe(e, detail)}") from None

    async def _apply_one(self, task: NodeTask, action: Any) -> None:
        ns = NAMESPACE
        fm = self.settings.field_manager
        if isinstance(action, WriteResults):
            self.requests += 1
            await self.client.apply(
                build_results_configmap(task, action.doc), field_manager=fm, force=True
            )
        elif isinstance(action, ApplySecret):
            await self._apply_secret(task)
        elif isinstance(action, ApplyConfigMap):
            cluster = await self.cluster_info()
            try:
                config = build_job_config(task, action.machines, cluster, self.settings.job)
            except ValidationError as e:
                where = "; ".join(
                    f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                    for err in e.errors()[:5]
                )
                raise UserError(f"the job config is invalid: {where}") from None
            self.requests += 1
            await self.client.apply(
                build_configmap(task, config, action.round), field_manager=fm, force=True
            )
        elif isinstance(action, CreateJob):
            # The Job's rights on its task's ConfigMaps come with it (owned by the task).
            self.requests += 3
            await self.client.apply(build_job_role(task), field_manager=fm, force=True)
            await self.client.apply(
                build_job_role_binding(task, self.settings), field_manager=fm, force=True
            )
            await self.client.create(build_job(task, self.settings, action.round))
            self.metrics.rounds.inc()
            log.info("task %s: round %d: job created", task.name, action.round)
        elif isinstance(action, DeleteJob):
            # The Job's rights go with it: between rounds no Job may write the task's
            # ConfigMaps (its Role and RoleBinding carry the Job's name).
            for res, cascade in (
                (Job, CascadeType.FOREGROUND),
                (RoleBinding, None),
                (Role, None),
            ):
                self.requests += 1
                try:
                    await self.client.delete(res, action.name, namespace=ns, cascade=cascade)
                except ApiError as e:
                    if e.status.code != 404:
                        raise
        elif isinstance(action, EmitEvent):
            await self.event(task, action.type, action.reason, action.message, once=action.once)
        elif isinstance(action, RequeueAfter):
            pass

    async def _apply_secret(self, task: NodeTask) -> None:
        ns = NAMESPACE
        self.requests += 1
        try:
            user = await self.client.get(Secret, task.spec.ssh_credential, namespace=ns)
        except ApiError as e:
            if e.status.code == 404:
                raise UserError(
                    f"spec.sshCredential: Secret {ns}/{task.spec.ssh_credential} does not "
                    f"exist; create it with key {CREDENTIAL_PASSWORD_KEY} or "
                    f"{CREDENTIAL_SSHKEY_KEY}"
                ) from None
            raise
        raw = {k: base64.b64decode(v) for k, v in (user.data or {}).items()}
        if (CREDENTIAL_PASSWORD_KEY in raw) == (CREDENTIAL_SSHKEY_KEY in raw):
            raise UserError(
                f"spec.sshCredential: Secret {ns}/{task.spec.ssh_credential} must hold "
                f"exactly one of the keys {CREDENTIAL_PASSWORD_KEY} and {CREDENTIAL_SSHKEY_KEY}"
            )
        known_hosts = raw.get(KNOWN_HOSTS_KEY)
        self.requests += 2
        token = await ensure_bootstrap_token(
            self.client,
            datetime.now(UTC),
            ns,
            ttl=timedelta(hours=self.settings.token.ttl_hours),
            margin=timedelta(hours=self.settings.token.margin_hours),
            field_manager=self.settings.field_manager,
        )
        pins = await self._host_key_pins(task)
        secret = build_secret(
            task, token, raw, known_hosts.decode(errors="replace") if known_hosts else None, pins
        )
        self.requests += 1
        await self.client.apply(secret, field_manager=self.settings.field_manager, force=True)

    async def _host_key_pins(self, task: NodeTask) -> dict[str, str]:
        """The pins of the task's Secret plus the host keys the results document reports
        (written just before, at the round's start); a pin already in the Secret is
        never replaced (api.hostkeys)."""
        ns = NAMESPACE
        ours = await self._get_optional(Secret, secret_name(task), ns)
        results = await self._get_optional(ConfigMap, results_name(task), ns)
        kept: dict[str, str] = {}
        try:
            raw = ((ours.data or {}) if ours is not None else {}).get(SECRET_PINS_KEY)
            if raw:
                kept = parse_pins(base64.b64decode(raw).decode())
        except ValueError:
            log.warning("task %s: the pins in its Secret are unreadable; kept none", task.name)
        doc = ResultsDoc.from_configmap_data(results.data) if results is not None else None
        learned = learned_pins(doc, task.spec.ssh_port) if doc is not None else {}
        return merge_pins(kept, learned)

    async def cluster_info(self) -> ClusterInfo:
        if self._cluster is None:
            self.requests += 1
            self._cluster = await read_cluster_info(self.client, self.settings.api_server)
        return self._cluster

    # --- writes on the task ----------------------------------------------------------------

    async def _patch_task(self, name: str, patch: dict[str, Any]) -> None:
        self.requests += 1
        await self.client.patch(NodeTaskResource, name, patch, patch_type=PatchType.MERGE)

    async def write_status(self, task: NodeTask, status: NodeTaskStatus) -> None:
        """Replace the whole status (one JSON patch on the status subresource): keys
        of nodeStatus and machines that are gone must go, and server-side apply turns
        an emptied map into null, which the CRD schema refuses."""
        if status == task.status:
            return
        body = [{"op": "add", "path": "/status", "value": status.to_dict()}]
        self.requests += 1
        try:
            await self.client.patch(
                NodeTaskResource.Status,
                task.name,
                body,
                patch_type=PatchType.JSON,
                field_manager=self.settings.field_manager,
            )
        except ApiError as e:
            self.metrics.api_errors.labels(operation="WriteStatus").inc()
            raise StepError(f"WriteStatus: {_describe(e)}") from None

    async def event(
        self, task: NodeTask, type_: str, reason: str, message: str, once: bool = False
    ) -> None:
        """Say it in edge-system (compat.md) and in default, where `kubectl describe nt`
        finds it (``penetrator.k8s.events``)."""
        events = build_events(
            task_reference(task),
            NAMESPACE,
            type_,
            reason,
            message,
            now=datetime.now(UTC),
            instance=self.settings.identity,
            once=once,
        )
        for ev in events:
            self.requests += 1
            try:
                await self.client.create(ev)
            except ApiError as e:
                if once and e.status.code == 409:
                    continue  # already said
                self.metrics.api_errors.labels(operation="Event").inc()
                ns = ev.metadata.namespace if ev.metadata else None
                log.warning(
                    "task %s: event %s not posted in %s: %s", task.name, reason, ns, _describe(e)
                )


def _not_progressing(
    task: NodeTask, status: NodeTaskStatus, reason: str, message: str, now: datetime
) -> NodeTaskStatus:
    """``status`` with Progressing=False and ``reason`` (the step cannot go on)."""
    old = task.status.condition(PROGRESSING)
    since = old.last_transition_time if old is not None and old.status == "False" else now
    cond = Condition(
        type=PROGRESSING,
        status="False",
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=task.metadata.generation,
    )
    others = [c for c in status.conditions if c.type != PROGRESSING]
    return status.model_copy(update={"conditions": [*others, cond]})


def _clean(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the Kopf body (its views are mappings, not dicts)."""
    out: dict[str, Any] = {}
    for key in ("apiVersion", "kind", "metadata", "spec", "status"):
        if key in body:
            out[key] = _plain(body[key])
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def active_claims(tasks: Mapping[str, Mapping[str, Any]], me: str) -> dict[str, str]:
    """IP -> name of an older active task (creationTimestamp, then name) that still
    has the machine to install: those machines wait (no machine is installed by two
    tasks at once). ``tasks``: name -> body (from the Kopf index)."""
    mine = tasks.get(me)
    if mine is None:
        return {}

    def key(body: Mapping[str, Any]) -> tuple[str, str]:
        meta = body.get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))

    my_key = key(mine)
    claims: dict[str, str] = {}
    for name, body in tasks.items():
        if name == me or key(body) >= my_key:
            continue
        status = body.get("status") or {}
        if status.get("nodetaskStatus") in (TaskPhase.READY.value, TaskPhase.FAILED.value):
            continue
        pending = status.get("nodeStatus")
        if pending is None:
            pending = (body.get("spec") or {}).get("nodeNamesOverride") or {}
            if not pending:
                pending = {ip: ip for ip in (body.get("spec") or {}).get("targetMachines") or []}
        for ip in pending.values():
            claims.setdefault(str(ip), name)
    return claims
