"""Pure builders of the objects that serve a NodeTask (typed lightkube models).

Every object lives in ``edge-system``, carries the task's label and an
ownerReference to the task (controller, blockOwnerDeletion), so deleting the task
garbage-collects it. Names come from the task's annotations (compat.md):

* ConfigMap ``<configmap-name>``: ``config.json``, the job config (no secret);
* ConfigMap ``<configmap-name>-results``: the results document (no secret; with
  each machine's pinned host-key fingerprint, ``penetrator.api.results``);
* Secret ``<configmap-name>-credentials``: ``token`` (bootstrap token), a copy of the
  SSH credential (``passwd`` or ``sshkey``), if given ``known_hosts``, and the host
  keys pinned by earlier rounds (``host_key_pins``);
* Job ``<job-name>``: one pod running ``penetrator job`` on the proxy node (or on
  the control plane in direct mode);
* Role and RoleBinding ``<job-name>``: the Job's ServiceAccount may get and patch
  exactly the task's results ConfigMap (no other ConfigMap).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from lightkube.models.batch_v1 import JobSpec
from lightkube.models.core_v1 import (
    Affinity,
    ConfigMapVolumeSource,
    Container,
    NodeAffinity,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodSpec,
    PodTemplateSpec,
    SecretVolumeSource,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from penetrator.api import (
    API_VERSION,
    CREDENTIAL_PASSWORD_KEY,
    CREDENTIAL_SSHKEY_KEY,
    KIND,
    MAX_OBJECT_NAME_LENGTH,
    NAMESPACE,
    NODE_LABEL,
    NodeTask,
)
from penetrator.api.hostkeys import SECRET_PINS_KEY, format_pins
from penetrator.api.jobconfig import Distribution, JobConfig, JobDefaults
from penetrator.api.results import RESULTS_KEY, ResultsDoc, results_configmap_name
from penetrator.api.settings import Settings
from penetrator.api.templates import named_template
from penetrator.k8s.bootstrap_token import BootstrapToken

CONFIG_KEY: Final = "config.json"
CONFIG_DIR: Final = "/etc/penetrator/job"
CREDENTIALS_DIR: Final = "/etc/penetrator/credentials"
TOKEN_KEY: Final = "token"  # noqa: S105 - a key name
KNOWN_HOSTS_KEY: Final = "known_hosts"
SECRET_SUFFIX: Final = "-credentials"  # noqa: S105 - a name suffix
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "penetrator"}
TASK_NAME_LABEL: Final = "nodetask.apps.superedge.io/task"
ROUND_ANNOTATION: Final = "nodetask.apps.superedge.io/round"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
CONTROL_PLANE_TOLERATIONS: Final = (
    Toleration(key="node-role.kubernetes.io/control-plane", operator="Exists", effect="NoSchedule"),
    Toleration(key="node-role.kubernetes.io/master", operator="Exists", effect="NoSchedule"),
)
SECRET_FILE_MODE: Final = 0o400


class BuildError(ValueError):
    """The task lacks what the builders need (names, label, uid)."""


def host_network(settings: Settings) -> bool:
    """The machines pull the package from the job's HTTP server (distribution ``http``,
    the default): they are not nodes yet and cannot reach a pod IP, so the pod uses
    the proxy node's network and the server listens on its address."""
    return settings.job.distribution is Distribution.HTTP


@dataclass(frozen=True)
class ClusterInfo:
    """What machines join: the API server endpoint and the CA pin."""

    server: str
    """https://host:port, as in ``cluster-info``."""
    ca_cert_hash: str
    """``sha256:<hex>`` of the CA's SubjectPublicKeyInfo."""

    @property
    def endpoint(self) -> str:
        """``host:port`` (kubeadm's apiServerEndpoint)."""
        parts = urlsplit(self.server)
        host = parts.hostname or ""
        port = parts.port or 443
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- names --------------------------------------------------------------------------


def _require(task: NodeTask) -> tuple[str, str, str, str]:
    """(job name, configmap name, task label, uid) or ``BuildError``."""
    missing = [
        what
        for what, value in (
            ("annotation app.superedge.io/job-name", task.job_name),
            ("annotation app.superedge.io/configmap-name", task.configmap_name),
            ("label app.superedge.io/node-label", task.task_label),
            ("metadata.uid", task.metadata.uid),
        )
        if not value
    ]
    if missing:
        raise BuildError(f"task {task.name}: missing {', '.join(missing)}")
    return (
        task.job_name or "",
        task.configmap_name or "",
        task.task_label or "",
        task.metadata.uid or "",
    )


def secret_name(task: NodeTask) -> str:
    _, cm, _, _ = _require(task)
    return cm[: MAX_OBJECT_NAME_LENGTH - len(SECRET_SUFFIX)].rstrip("-.") + SECRET_SUFFIX


def results_name(task: NodeTask) -> str:
    _, cm, _, _ = _require(task)
    return results_configmap_name(cm)


def owner_reference(task: NodeTask) -> OwnerReference:
    _, _, _, uid = _require(task)
    return OwnerReference(
        apiVersion=API_VERSION,
        kind=KIND,
        name=task.name,
        uid=uid,
        controller=True,
        blockOwnerDeletion=True,
    )


def _meta(task: NodeTask, name: str, annotations: dict[str, str] | None = None) -> ObjectMeta:
    _, _, label, _ = _require(task)
    return ObjectMeta(
        name=name,
        namespace=NAMESPACE,
        labels={NODE_LABEL: label, TASK_NAME_LABEL: task.name[:63].rstrip("-."), **MANAGED_BY},
        annotations=annotations or None,
        ownerReferences=[owner_reference(task)],
    )


# --- the job config and ConfigMaps ------------------------------------------------------


def build_job_config(
    task: NodeTask,
    machines: Mapping[str, str],
    cluster: ClusterInfo,
    defaults: JobDefaults | None = None,
) -> JobConfig:
    """The job config for ``machines`` (name -> IP): the settings' ``job`` defaults
    (packages, template, hostKeyPolicy, concurrency, ...), then the task's facts."""
    _, _, label, _ = _require(task)
    data: dict[str, Any] = (defaults or JobDefaults()).model_dump(by_alias=True)
    data.update(
        sshPort=task.spec.ssh_port,
        taskLabel=label,
        apiServer=cluster.endpoint,
        caCertHash=cluster.ca_cert_hash,
    )
    if task.spec.join_template is not None:  # the task's choice wins over the settings'
        data["template"] = named_template(task.spec.join_template)
    return JobConfig.from_plan(dict(machines), **data)


def build_configmap(task: NodeTask, job_config: JobConfig, round_: int = 0) -> ConfigMap:
    """The task's ConfigMap: ``config.json`` (compact JSON; no secret by construction:
    ``JobConfig`` has no field for one)."""
    _, cm, _, _ = _require(task)
    text = job_config.model_dump_json(by_alias=True, exclude_none=True)
    return ConfigMap(
        apiVersion="v1",
        kind="ConfigMap",
        metadata=_meta(task, cm, {ROUND_ANNOTATION: str(round_)}),
        data={CONFIG_KEY: text},
    )


def build_results_configmap(task: NodeTask, doc: ResultsDoc) -> ConfigMap:
    return ConfigMap(
        apiVersion="v1",
        kind="ConfigMap",
        metadata=_meta(task, results_name(task)),
        data={RESULTS_KEY: doc.to_json()},
    )


# --- the Secret ----------------------------------------------------------------------------


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def build_secret(
    task: NodeTask,
    token: BootstrapToken,
    credential: Mapping[str, bytes] | None = None,
    known_hosts: str | None = None,
    pins: Mapping[str, str] | None = None,
) -> Secret:
    """The task's Secret: the bootstrap token, a copy of the SSH credential (``passwd``
    or ``sshkey`` from the user's Secret, as raw bytes; other keys are not copied), the
    host keys the user trusts and those pinned by earlier rounds (host -> fingerprint).
    ``repr`` of the result holds the secret: never log it."""
    data = {TOKEN_KEY: _b64(token.value)}
    for key in (CREDENTIAL_PASSWORD_KEY, CREDENTIAL_SSHKEY_KEY):
        if credential is not None and key in credential:
            data[key] = _b64(credential[key])
    if known_hosts:
        data[KNOWN_HOSTS_KEY] = _b64(known_hosts)
    if pins:
        data[SECRET_PINS_KEY] = _b64(format_pins(pins))
    return Secret(
        apiVersion="v1",
        kind="Secret",
        type="Opaque",
        metadata=_meta(task, secret_name(task)),
        data=data,
    )


# --- the Job ---------------------------------------------------------------------------------


def job_argv(task: NodeTask, settings: Settings) -> list[str]:
    argv = [
        *settings.job_pod.command,
        "job",
        "--config",
        f"{CONFIG_DIR}/{CONFIG_KEY}",
        "--credentials",
        CREDENTIALS_DIR,
    ]
    if settings.job_pod.report:
        argv += ["--report-configmap", results_name(task)]
    return argv


def _affinity(task: NodeTask, settings: Settings) -> Affinity:
    if task.spec.proxy_node:
        req = NodeSelectorRequirement(
            key=HOSTNAME_LABEL, operator="In", values=[task.spec.proxy_node]
        )
    else:
        req = NodeSelectorRequirement(key=settings.job_pod.cloud_node_label, operator="Exists")
    return Affinity(
        nodeAffinity=NodeAffinity(
            requiredDuringSchedulingIgnoredDuringExecution=NodeSelector(
                nodeSelectorTerms=[NodeSelectorTerm(matchExpressions=[req])]
            )
        )
    )


def build_job(task: NodeTask, settings: Settings, round_: int = 0) -> Job:
    """The task's one Job: ``backoffLimit: 0`` (rounds are the operator's business),
    ``activeDeadlineSeconds`` from settings, on the proxy node (node affinity on
    ``kubernetes.io/hostname``) or, in direct mode, on the control plane; the usual
    control-plane taints tolerated; config and credentials mounted read-only, the
    Secret with mode 0400; the node's network when the machines pull the package
    over HTTP (``host_network``). The job learns everything else from its config
    (no environment)."""
    job_name, cm, _, _ = _require(task)
    meta = _meta(task, job_name, {ROUND_ANNOTATION: str(round_)})
    pod_labels = dict(meta.labels or {})
    pod_settings = settings.job_pod
    container = Container(
        name="install",
        image=pod_settings.image,
        imagePullPolicy=pod_settings.image_pull_policy,
        command=job_argv(task, settings),
        volumeMounts=[
            VolumeMount(name="config", mountPath=CONFIG_DIR, readOnly=True),
            VolumeMount(name="credentials", mountPath=CREDENTIALS_DIR, readOnly=True),
        ],
    )
    pod = PodSpec(
        restartPolicy="Never",
        serviceAccountName=pod_settings.service_account,
        automountServiceAccountToken=True,
        enableServiceLinks=False,
        hostNetwork=host_network(settings) or None,
        dnsPolicy="ClusterFirstWithHostNet" if host_network(settings) else None,
        affinity=_affinity(task, settings),
        tolerations=list(CONTROL_PLANE_TOLERATIONS),
        containers=[container],
        volumes=[
            Volume(name="config", configMap=ConfigMapVolumeSource(name=cm)),
            Volume(
                name="credentials",
                secret=SecretVolumeSource(
                    secretName=secret_name(task), defaultMode=SECRET_FILE_MODE
                ),
            ),
        ],
    )
    return Job(
        apiVersion="batch/v1",
        kind="Job",
        metadata=meta,
        spec=JobSpec(
            backoffLimit=0,
            activeDeadlineSeconds=pod_settings.deadline_seconds,
            template=PodTemplateSpec(metadata=ObjectMeta(labels=pod_labels), spec=pod),
        ),
    )


# --- what the Job may write ---------------------------------------------------------------


def build_job_role(task: NodeTask) -> Role:
    """Get and patch on the task's results ConfigMap, by name: a Job cannot touch
    another task's results, nor any other ConfigMap."""
    job_name, _, _, _ = _require(task)
    return Role(
        apiVersion="rbac.authorization.k8s.io/v1",
        kind="Role",
        metadata=_meta(task, job_name),
        rules=[
            PolicyRule(
                apiGroups=[""],
                resources=["configmaps"],
                resourceNames=[results_name(task)],
                verbs=["get", "patch"],
            )
        ],
    )


def build_job_role_binding(task: NodeTask, settings: Settings) -> RoleBinding:
    job_name, _, _, _ = _require(task)
    return RoleBinding(
        apiVersion="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        metadata=_meta(task, job_name),
        roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=job_name),
        subjects=[
            Subject(
                kind="ServiceAccount", name=settings.job_pod.service_account, namespace=NAMESPACE
            )
        ],
    )
