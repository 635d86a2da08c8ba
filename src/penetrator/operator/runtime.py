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
from typing import Any, assert_never

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
)
from penetrator.api.hostkeys import SECRET_PINS_KEY, learned_pins, merge_pins, parse_pins
from penetrator.api.results import ResultsDoc
from penetrator.api.settings import Settings
from penetrator.k8s.admission import nodes_exist
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
    controlled_by,
    controller_text,
    results_name,
    secret_name,
)
from penetrator.k8s.client import NodeTaskResource
from penetrator.k8s.clusterinfo import read_cluster_info
from penetrator.k8s.events import build_events, task_reference
from penetrator.k8s.observe import installed_nodes, observe_job
from penetrator.k8s.tokens import ensure_bootstrap_token
from penetrator.operator.metrics import Metrics
from penetrator.plan.prepare import needs_plan, plan_missing
from penetrator.plan.reconcile import (
    PROGRESSING,
    Action,
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
NODE_CHECK_SECONDS = 5.0
"""Generated names looked up as Nodes by name this long, then by hostname label."""


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
        metrics.count_requests(client)  # every request this client sends

    @property
    def requests(self) -> int:
        """API requests sent so far (bench: per reconcile)."""
        return self.metrics.requests

    # --- observe --------------------------------------------------------------------------

    async def _get_optional(self, res: Any, name: str, namespace: str) -> Any | None:
        try:
            return await self.client.get(res, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    async def _claim(self, task: NodeTask, res: Any, name: str) -> bool:
        """Before a write or delete of ``res`` ``name``: True if it exists and this task
        (its uid) is its controller, False if it does not exist; ``StepError`` if it
        belongs to anything else: it is never patched, force-applied or deleted."""
        obj = await self._get_optional(res, name, NAMESPACE)
        if obj is None:
            return False
        if controlled_by(obj.metadata, task.metadata.uid or ""):
            return True
        raise StepError(
            f"{res.__name__} {NAMESPACE}/{name} exists but is not this task's (its "
            f"controller is {controller_text(obj.metadata)}); it is left alone: delete "
            "it, or delete and re-create the task"
        )

    async def _apply_owned(self, task: NodeTask, obj: Any) -> None:
        """Server-side apply (forced: our field manager takes its fields back) only onto
        an object this task controls or a new one."""
        await self._claim(task, type(obj), obj.metadata.name)
        await self.client.apply(obj, field_manager=self.settings.field_manager, force=True)

    async def observe(
        self, task: NodeTask
    ) -> tuple[dict[str, str], ObservedJob | None, ResultsDoc | None]:
        assert task.task_label
        assert task.job_name
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
        if needs_plan(task):
            await self.record_plan(task)
            return 0.5  # the next step sees the planned task
        installed, job, doc = await self.observe(task)
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

    async def _apply_one(self, task: NodeTask, action: Action) -> None:
        match action:
            case WriteResults():
                await self._write_results(task, action)
            case ApplySecret():
                await self._apply_secret(task)
            case ApplyConfigMap():
                await self._apply_configmap(task, action)
            case CreateJob():
                await self._create_job(task, action)
            case DeleteJob():
                await self._delete_job(task, action)
            case EmitEvent():
                await self.event(task, action.type, action.reason, action.message, once=action.once)
            case RequeueAfter():
                pass  # the caller's: the seconds until the next step
            case _:
                assert_never(action)

    async def _write_results(self, task: NodeTask, action: WriteResults) -> None:
        await self._apply_owned(task, build_results_configmap(task, action.doc))

    async def _apply_configmap(self, task: NodeTask, action: ApplyConfigMap) -> None:
        cluster = await self.cluster_info()
        await self._apply_owned(task, job_configmap(task, action, cluster, self.settings))

    async def _create_job(self, task: NodeTask, action: CreateJob) -> None:
        # The Job's rights on its task's ConfigMaps come with it (owned by the task).
        role, binding, job = job_objects(task, action, self.settings)
        await self._apply_owned(task, role)
        await self._apply_owned(task, binding)
        await self.client.create(job)
        self.metrics.rounds.inc()
        log.info("task %s: round %d: job created", task.name, action.round)

    async def _delete_job(self, task: NodeTask, action: DeleteJob) -> None:
        # The Job's rights go with it: between rounds no Job may write the task's
        # ConfigMaps (its Role and RoleBinding carry the Job's name).
        for res, name, cascade in job_deletions(action):
            if not await self._claim(task, res, name):
                continue  # gone already
            try:
                await self.client.delete(res, name, namespace=NAMESPACE, cascade=cascade)
            except ApiError as e:
                if e.status.code != 404:
                    raise

    async def _apply_secret(self, task: NodeTask) -> None:
        ns = NAMESPACE
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
        await self._apply_owned(task, secret)

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
            self._cluster = await read_cluster_info(self.client, self.settings.api_server)
        return self._cluster

    # --- writes on the task ----------------------------------------------------------------

    async def record_plan(self, task: NodeTask) -> None:
        """No webhook planned the task on create: the same function decides its plan
        now and it is written into the task the same way, once (only what it lacks)."""
        plan = await plan_missing(task, self.rng, self._nodes_exist)
        patch = plan.patch()
        # Only onto the task as read: a step that read it before the last plan was
        # written must not draw a second one (409; the next step reads it afresh).
        patch.setdefault("metadata", {})["resourceVersion"] = task.metadata.resource_version
        try:
            await self._patch_task(task.name, patch)
        except ApiError as e:
            if e.status.code != 409:
                raise
            log.info("task %s: changed while its plan was decided; reading it again", task.name)

    async def _nodes_exist(self, names: list[str]) -> set[str]:
        lookup = await nodes_exist(self.client, names, budget=NODE_CHECK_SECONDS)
        return lookup.found

    async def _patch_task(self, name: str, patch: dict[str, Any]) -> None:
        await self.client.patch(NodeTaskResource, name, patch, patch_type=PatchType.MERGE)

    async def write_status(self, task: NodeTask, status: NodeTaskStatus) -> None:
        """Replace the whole status (one JSON patch on the status subresource): keys
        of nodeStatus and machines that are gone must go, and server-side apply turns
        an emptied map into null, which the CRD schema refuses."""
        if status == task.status:
            return
        body = [{"op": "add", "path": "/status", "value": status.to_dict()}]
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


def job_configmap(
    task: NodeTask, action: ApplyConfigMap, cluster: ClusterInfo, settings: Settings
) -> ConfigMap:
    """The ConfigMap ``action`` becomes: the job config for its machines (pure).
    ``UserError`` naming the fields when the operator's job defaults make it invalid."""
    try:
        config = build_job_config(task, action.machines, cluster, settings.job)
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
        )
        raise UserError(f"the job config is invalid: {where}") from None
    return build_configmap(task, config, action.round)


def job_objects(
    task: NodeTask, action: CreateJob, settings: Settings
) -> tuple[Role, RoleBinding, Job]:
    """What ``action`` becomes, in the order they are written (pure): the Job's Role
    and RoleBinding, then the Job."""
    return (
        build_job_role(task),
        build_job_role_binding(task, settings),
        build_job(task, settings, action.round),
    )


def job_deletions(action: DeleteJob) -> tuple[tuple[Any, str, CascadeType | None], ...]:
    """What ``action`` deletes, in order (pure): the Job (foreground: the object stays
    until its pods are gone), then its RoleBinding and Role (same name)."""
    return (
        (Job, action.name, CascadeType.FOREGROUND),
        (RoleBinding, action.name, None),
        (Role, action.name, None),
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
