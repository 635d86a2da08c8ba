"""One reconcile of one task: observe, decide (``plan.reconcile``), apply.

Observing costs a fixed number of requests, whatever the size of the cluster: the
Nodes carrying the task's label (one list by label selector), the task's Job (one
get), its results ConfigMap (one get) and, while a Job has not reported its last
batch, its pods (one list by the Job's label in edge-system). Other tasks come
from the Kopf index. Every write is a server-side apply with our field manager,
except the Job (create: a second Job of the same name is refused by the API server)
and the status (apply on the status subresource).

The Job may not write Nodes: the operator labels the Nodes its results report
joined (names of the task's plan only; one patch per newly joined machine), and
approves a machine's kubelet CSR (``k8s.csr``: requester is the task's token, name
in its plan), first removing a Node of that name that lacks the task's label (the
compat rule: a stale Node is deleted before the reinstall). The real ``kubeadm
join`` checks that name before any CSR, so the Job also asks for that removal in the
results once it has reset the machine (``remove_awaited_nodes``), and waits for it.

Nothing secret is logged: exceptions are reported by type and HTTP status only.
"""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.core_v1 import ConfigMap, Node, Pod, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import CascadeType, PatchType
from pydantic import ValidationError

from penetrator.api import (
    CREDENTIAL_PASSWORD_KEY,
    CREDENTIAL_SSHKEY_KEY,
    NAMESPACE,
    NODE_LABEL,
    Condition,
    MachinePhase,
    NodeTask,
    NodeTaskStatus,
)
from penetrator.api.hostkeys import store_name, store_problem
from penetrator.api.packages import PackageError, ResolvedPackages, resolve
from penetrator.api.results import ResultsDoc, awaiting_removal
from penetrator.api.settings import Settings
from penetrator.k8s.admission import nodes_exist
from penetrator.k8s.bootstrap_token import BootstrapToken
from penetrator.k8s.builders import (
    KNOWN_HOSTS_KEY,
    TOKEN_KEY,
    ClusterInfo,
    build_configmap,
    build_host_key_store,
    build_job,
    build_job_config,
    build_job_role,
    build_job_role_binding,
    build_job_service_account,
    build_results_configmap,
    build_secret,
    build_token_secret,
    controlled_by,
    results_name,
    secret_name,
    strip_credential_patch,
)
from penetrator.k8s.client import NodeTaskResource
from penetrator.k8s.clusterinfo import read_cluster_info, server_version
from penetrator.k8s.csr import TaskFacts, Verdict, approve, csr_facts, csr_verdict, task_uid_of
from penetrator.k8s.events import build_events, task_reference
from penetrator.k8s.observe import installed_nodes, observe_job
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
    StripCredential,
    WriteResults,
    reconcile,
)

log = logging.getLogger(__name__)
USER_ERROR_REQUEUE = 30.0
NODE_CHECK_SECONDS = 5.0
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
"""Set by the Job controller on its pods."""
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


class NotOurs(StepError):
    """An object the task's names point at belongs to another object (its controller
    owner is not this task): typically a deleted task of the same name and label,
    whose objects the garbage collector has not removed yet. Never read as the
    task's, never written over; the step waits for it to go."""


def foreign_owner(obj: Any, task: NodeTask) -> str | None:
    """None when ``task`` controls ``obj`` (``controlled_by``); else the controller's
    uid ('' when nothing controls it)."""
    if controlled_by(obj.metadata, task.metadata.uid or ""):
        return None
    refs = (obj.metadata.ownerReferences if obj.metadata else None) or []
    return next((r.uid for r in refs if r.controller), "")


def check_ours(obj: Any | None, task: NodeTask) -> Any | None:
    """``obj`` when it is absent or the task's; ``NotOurs`` otherwise."""
    if obj is None or (owner := foreign_owner(obj, task)) is None:
        return obj
    kind = type(obj).__name__
    name = obj.metadata.name if obj.metadata else "?"
    whose = f"object {owner}" if owner else "no task"
    raise NotOurs(
        f"{kind} {NAMESPACE}/{name} belongs to {whose}, not to this task "
        f"({task.metadata.uid}); it is left alone: delete it, or delete and re-create the task"
    )


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
        self._version: str | None = settings.job.kubernetes_version
        metrics.count_requests(client)  # every request this client sends

    @property
    def requests(self) -> int:
        """API requests sent so far (bench: per reconcile)."""
        return self.metrics.requests

    # --- observe --------------------------------------------------------------------------

    async def _get_optional(self, res: Any, name: str, namespace: str | None) -> Any | None:
        try:
            return await self.client.get(res, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise

    async def _claim(self, task: NodeTask, res: Any, name: str) -> bool:
        """Before a write or delete of ``res`` ``name``: True if it exists and this task
        (its uid) is its controller, False if it does not exist; ``NotOurs`` if it
        belongs to anything else: it is never patched, force-applied or deleted."""
        return await self._owned(res, name, task) is not None

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
        job_obj = check_ours(await self._get_optional(Job, task.job_name, NAMESPACE), task)
        cm = check_ours(await self._get_optional(ConfigMap, results_name(task), NAMESPACE), task)
        doc = ResultsDoc.from_configmap_data(cm.data) if cm is not None else None
        pods: list[Pod] = []
        if job_obj is not None and (doc is None or not doc.done):
            # Why a pod stopped before the job reported: one list, by the Job's label,
            # in edge-system (the cost does not grow with the cluster).
            found = self.client.list(
                Pod, namespace=NAMESPACE, labels={JOB_NAME_LABEL: task.job_name}
            )
            pods = [p async for p in found]
        job = observe_job(job_obj, pods) if job_obj is not None else None
        if doc is not None:
            await self.remove_awaited_nodes(task, doc)
            installed = await self.label_joined(task, installed, doc)
        return installed, job, doc

    async def remove_awaited_nodes(self, task: NodeTask, doc: ResultsDoc) -> list[str]:
        """Delete the Nodes the round's Job waits for before it joins a machine under
        the same name (``awaiting_removal``: names of the task's plan only), each only
        when it lacks the task's label (``remove_stale_node``). No request when none
        awaits; the results ConfigMap's change wakes the step (``handlers``)."""
        return [
            name
            for name in awaiting_removal(doc, task.spec.plan())
            if await self.remove_stale_node(task, name)
        ]

    async def label_joined(
        self, task: NodeTask, installed: dict[str, str], doc: ResultsDoc
    ) -> dict[str, str]:
        """Label the Nodes the results report joined that lack the task's label
        (names of the task's plan only; one patch each, once): ``installed`` with them."""
        plan = task.spec.plan()
        new = [
            n
            for n, r in doc.machines.items()
            if r.phase is MachinePhase.JOINED and n in plan and n not in installed
        ]
        patch = {"metadata": {"labels": {NODE_LABEL: task.task_label}}}
        out = dict(installed)
        for name in new:
            try:
                await self.client.patch(Node, name, patch, patch_type=PatchType.MERGE)
            except ApiError as e:
                if e.status.code != 404:  # gone again: the fold says so
                    raise
                continue
            out[name] = plan[name]
            log.info("task %s: node %s labelled", task.name, name)
            for old in doc.machines[name].replaces or []:
                await self.remove_renamed_node(task, old, plan[name])
        return out

    async def remove_renamed_node(self, task: NodeTask, name: str, ip: str) -> bool:
        """Delete the Node ``name`` a machine of the plan left behind under its old name:
        only when it is no name of the plan, still has the machine's address ``ip`` and
        lacks the task's label (checked here, not taken from the job's word)."""
        if name in task.spec.plan():
            return False
        try:
            node = await self.client.get(Node, name)
        except ApiError as e:
            if e.status.code == 404:
                return False
            raise
        labels = (node.metadata.labels if node.metadata else None) or {}
        addresses = {a.address for a in (node.status.addresses or [])} if node.status else set()
        if labels.get(NODE_LABEL) == task.task_label or ip not in addresses:
            return False
        try:
            await self.client.delete(Node, name)
        except ApiError as e:
            if e.status.code == 404:
                return False
            raise
        log.info("task %s: node %s (the old name of %s) deleted", task.name, name, ip)
        return True

    async def _owned(self, res: Any, name: str | None, task: NodeTask) -> Any | None:
        """The object of that name if it is the task's, None if absent; ``NotOurs``
        when another object owns it (it is neither read nor written over)."""
        if not name:
            return None
        return check_ours(await self._get_optional(res, name, NAMESPACE), task)

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
        now = datetime.now(UTC)
        try:
            installed, job, doc = await self.observe(task)
        except NotOurs as e:
            await self.write_status(task, await self._refused(task, task.status, e, now))
            return USER_ERROR_REQUEUE
        decision = reconcile(task, installed, job, doc, now, self.rsettings, busy)
        requeue = decision.requeue_after
        status = decision.status
        try:
            await self.apply(task, decision)
        except (UserError, StepError) as e:
            status = await self._refused(task, status, e, now)
            requeue = USER_ERROR_REQUEUE
        await self.write_status(task, status)
        self.metrics.task_status(task.name, status)
        if decision.round_finished is not None and doc is not None and doc.started is not None:
            self.metrics.rounds_finished.inc()
            self.metrics.round_duration.observe(max(0.0, (now - doc.started).total_seconds()))
        return requeue

    async def _refused(
        self, task: NodeTask, status: NodeTaskStatus, e: Exception, now: datetime
    ) -> NodeTaskStatus:
        """Shown on the task, not only in our log: the user must fix something
        (CannotStart), or the API server refused a write or an object of the task's
        names is not the task's (ApiRefused); one Warning Event per cause."""
        reason = "CannotStart" if isinstance(e, UserError) else "ApiRefused"
        old = task.status.condition(PROGRESSING)
        if old is None or (old.reason, old.message) != (reason, str(e)):
            await self.event(task, "Warning", reason, str(e))
        return _not_progressing(task, status, reason, str(e), now)

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
            case StripCredential():
                await self._strip_credential(task)
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
        store = await self._host_key_store(task)
        packages = await self.packages(task)
        cm = job_configmap(task, action, cluster, self.settings, store, packages)
        await self._apply_owned(task, cm)

    async def _create_job(self, task: NodeTask, action: CreateJob) -> None:
        # The Job's rights on its task's ConfigMaps come with it (owned by the task).
        store = await self._host_key_store(task)
        packages = await self.packages(task)
        account, role, binding, job = job_objects(task, action, self.settings, store, packages)
        await self._apply_owned(task, account)
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
        # A token of this round only: valid for the Job's deadline and a margin, in
        # the task's groups (its CSRs are approved by us, for its plan only).
        ttl = self.settings.token.ttl_seconds(self.settings.job_pod.deadline_seconds)
        token = BootstrapToken.generate(datetime.now(UTC), timedelta(seconds=ttl))
        await self.client.create(build_token_secret(task, token))
        secret = build_secret(
            task, token, raw, known_hosts.decode(errors="replace") if known_hosts else None
        )
        await self._apply_owned(task, secret)

    async def _host_key_store(self, task: NodeTask) -> str:
        """The name of the task's proxy node's host-key store, created (empty) when
        missing: by the proxy Node's uid, not by the name in the task (api.hostkeys)."""
        proxy = task.spec.proxy_node or None
        uid: str | None = None
        if proxy is not None:
            node = await self._get_optional(Node, proxy, None)
            if node is None or node.metadata is None or not node.metadata.uid:
                raise UserError(
                    f"spec.proxyNode: there is no Node {proxy!r} in the cluster; name a Node "
                    "of the cluster, or leave it out to run the Job in the control plane"
                )
            uid = node.metadata.uid
        name = store_name(uid)
        store = await self._get_optional(ConfigMap, name, NAMESPACE)
        if store is None:
            try:
                await self.client.create(build_host_key_store(name, proxy))
            except ApiError as e:
                if e.status.code != 409:  # made meanwhile: pins are never reset
                    raise
            return name
        problem = store_problem(store.data)
        if problem:  # never dropped: no Job starts without the pins it must check
            raise UserError(f"host-key store ConfigMap {NAMESPACE}/{name}: {problem}")
        return name

    async def _strip_credential(self, task: NodeTask) -> None:
        if await self._owned(Secret, secret_name(task), task) is None:
            return  # none (or NotOurs raised): nothing of ours to strip
        try:
            await self.client.patch(
                Secret,
                secret_name(task),
                strip_credential_patch(),
                namespace=NAMESPACE,
                patch_type=PatchType.MERGE,
            )
        except ApiError as e:
            if e.status.code != 404:
                raise

    # --- kubelet CSRs ------------------------------------------------------------------------

    async def review_csr(self, name: str, tasks: Iterable[NodeTask]) -> Verdict | None:
        """Approve the kubelet client CSR ``name`` when ``k8s.csr.csr_verdict`` says
        so, after removing a stale Node of that name; None: none of ours, or decided.
        The CSR is read afresh: an event may be old (a replica that waited for the
        Lease), and a decided CSR's Node must not be touched."""
        try:
            csr = await self.client.get(CertificateSigningRequest, name)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise
        facts = csr_facts(csr)
        uid = task_uid_of(facts)
        if uid is None or facts.decided:
            return None
        task = next((t for t in tasks if t.metadata.uid == uid), None)
        verdict = csr_verdict(facts, await self._task_facts(task) if task else None)
        if verdict is None:
            return None
        if not verdict.approve or task is None or verdict.node is None:
            log.warning("CSR %s left pending: %s", name, verdict.reason)
            return verdict
        await self.remove_stale_node(task, verdict.node)
        await approve(self.client, csr, f"penetrator: {verdict.reason}")
        log.info("CSR %s approved: %s", name, verdict.reason)
        return verdict

    async def _task_facts(self, task: NodeTask) -> TaskFacts:
        """The task's plan and current token id (from its Secret; no token: None)."""
        token_id: str | None = None
        ours = await self._get_optional(Secret, secret_name(task), NAMESPACE)
        if ours is not None and foreign_owner(ours, task) is not None:
            ours = None  # another task's Secret of that name: no token of this task
        raw = ((ours.data or {}) if ours is not None else {}).get(TOKEN_KEY)
        if raw:
            token_id = base64.b64decode(raw).decode(errors="replace").partition(".")[0] or None
        return TaskFacts(task.name, task.metadata.uid or "", token_id, frozenset(task.spec.plan()))

    async def remove_stale_node(self, task: NodeTask, name: str) -> bool:
        """Delete the Node ``name`` (of the task's plan) unless it carries the task's
        label: a reinstalled machine registers afresh. True when one was deleted."""
        try:
            node = await self.client.get(Node, name)
        except ApiError as e:
            if e.status.code == 404:
                return False
            raise
        labels = (node.metadata.labels if node.metadata else None) or {}
        if labels.get(NODE_LABEL) == task.task_label:
            return False
        try:
            await self.client.delete(Node, name)
        except ApiError as e:
            if e.status.code == 404:
                return False
            raise
        log.info("task %s: stale node %s deleted before its reinstall", task.name, name)
        return True

    async def packages(self, task: NodeTask) -> ResolvedPackages:
        """Where the task's packages come from (settings, then the task's
        ``spec.packages``; the version: the task's, the settings', else the cluster's).
        ``UserError`` naming the field before any Job is made."""
        if self._version is None:
            self._version = await server_version(self.client)
        try:
            return resolve(self.settings.packages, task.spec.packages, self._version)
        except PackageError as e:
            raise UserError(str(e)) from None

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
    task: NodeTask,
    action: ApplyConfigMap,
    cluster: ClusterInfo,
    settings: Settings,
    host_key_store: str | None = None,
    packages: ResolvedPackages | None = None,
) -> ConfigMap:
    """The ConfigMap ``action`` becomes: the job config for its machines (pure).
    ``UserError`` naming the fields when the operator's job defaults make it invalid."""
    try:
        config = build_job_config(
            task, action.machines, cluster, settings.job, host_key_store, packages
        )
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:5]
        )
        raise UserError(f"the job config is invalid: {where}") from None
    return build_configmap(task, config, action.round)


def job_objects(
    task: NodeTask,
    action: CreateJob,
    settings: Settings,
    host_key_store: str | None = None,
    packages: ResolvedPackages | None = None,
) -> tuple[ServiceAccount, Role, RoleBinding, Job]:
    """What ``action`` becomes, in the order they are written (pure): the task's
    ServiceAccount, the Job's Role and RoleBinding, then the Job."""
    return (
        build_job_service_account(task),
        build_job_role(task, host_key_store),
        build_job_role_binding(task),
        build_job(task, settings, action.round, packages=packages),
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
