"""Pure builders of the objects that serve a NodeTask (typed lightkube models).

Every object lives in ``edge-system``, carries the task's label and an
ownerReference to the task (controller, blockOwnerDeletion), so deleting the task
garbage-collects it. Names come from the task's uid (``nodetask-<uid>``, the values
the annotations app.superedge.io/job-name and configmap-name show, compat.md), never
from a string a user may edit:

* ConfigMap ``<configmap-name>``: ``config.json``, the job config (no secret);
* ConfigMap ``<configmap-name>-results``: the results document (no secret; with
  each machine's pinned host-key fingerprint, ``penetrator.api.results``);
* Secret ``<configmap-name>-credentials``: ``token`` (bootstrap token), a copy of the
  SSH credential (``passwd`` or ``sshkey``) and, if given, ``known_hosts``;
* Job ``<job-name>``: one pod running ``penetrator job`` on the proxy node (or on
  the control plane in direct mode);
* ServiceAccount ``<job-name>``: the task's own; its token is projected into the
  Job's pod only (a short-lived one, ``_api_access``);
* Role and RoleBinding ``<job-name>``: the task's ServiceAccount may get and patch
  exactly the task's results ConfigMap and its proxy node's host-key store, for one
  round;
* the bootstrap token's Secret in kube-system (``build_token_secret``): one per
  round, expiring with the round's Job, owned by the task too.

Not a task's: ConfigMap ``penetrator-hostkeys-<proxy node uid>`` (or ``-direct``),
the proxy node's host-key pins (``build_host_key_store``, ``penetrator.api.hostkeys``).

The Job never writes Nodes (its account may only read them, the chart's
``penetrator-job`` ClusterRole): the operator removes a stale Node and labels a
joined one, after checking the name against the task's plan (``k8s.csr``,
``operator.runtime``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

from lightkube.models.batch_v1 import JobSpec
from lightkube.models.core_v1 import (
    Affinity,
    Capabilities,
    ConfigMapProjection,
    ConfigMapVolumeSource,
    Container,
    DownwardAPIProjection,
    DownwardAPIVolumeFile,
    EmptyDirVolumeSource,
    HostPathVolumeSource,
    ImageVolumeSource,
    KeyToPath,
    NodeAffinity,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    ObjectFieldSelector,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    ProjectedVolumeSource,
    ResourceRequirements,
    SeccompProfile,
    SecretVolumeSource,
    SecurityContext,
    ServiceAccountTokenProjection,
    Toleration,
    Volume,
    VolumeMount,
    VolumeProjection,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Secret, ServiceAccount
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
from penetrator.api.hostkeys import DIRECT, STORE_PINS_KEY, STORE_PROXY_ANNOTATION
from penetrator.api.jobconfig import Distribution, JobConfig, JobDefaults
from penetrator.api.packages import IMAGE_ROOT, ResolvedPackages
from penetrator.api.results import RESULTS_KEY, ResultsDoc, results_configmap_name
from penetrator.api.settings import Settings
from penetrator.api.templates import named_template
from penetrator.k8s.bootstrap_token import (
    BootstrapToken,
    bootstrap_token_secret,
    task_token_groups,
)

CONFIG_KEY: Final = "config.json"
CONFIG_DIR: Final = "/etc/penetrator/job"
CREDENTIALS_DIR: Final = "/etc/penetrator/credentials"
TOKEN_KEY: Final = "token"  # noqa: S105 - a key name
KNOWN_HOSTS_KEY: Final = "known_hosts"
SECRET_SUFFIX: Final = "-credentials"  # noqa: S105 - a name suffix
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "penetrator"}
TASK_NAME_LABEL: Final = "nodetask.apps.superedge.io/task"
ROUND_ANNOTATION: Final = "nodetask.apps.superedge.io/round"
NODE_NAME_FIELD: Final = "metadata.name"
"""The proxy node is chosen by its name (``matchFields``), not by the hostname label
a node may set on itself."""
TMP_DIR: Final = "/tmp"
TMP_SIZE_LIMIT: Final = "64Mi"
TERMINATION_LOG: Final = "/dev/termination-log"
"""Where the job writes why it could not start (``penetrator job --termination-log``)."""
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
MIN_TOKEN_SECONDS: Final = 600  # the API server's minimum for a projected token
TOKEN_MARGIN_SECONDS: Final = 600
PRIVILEGED_PORTS: Final = 1024
CONTROL_PLANE_TOLERATIONS: Final = (
    Toleration(key="node-role.kubernetes.io/control-plane", operator="Exists", effect="NoSchedule"),
    Toleration(key="node-role.kubernetes.io/master", operator="Exists", effect="NoSchedule"),
)
SECRET_FILE_MODE: Final = 0o400
PACKAGES_DIR: Final = "/var/lib/penetrator/package-source"
"""Where a package source (host directory, image volume, init container's copy) is
mounted in the Job's pod."""
DOWNLOAD_DIR: Final = "/tmp/packages"
"""Where the Job fetches the URL source's packages (an emptyDir of its own)."""
DEFAULT_KUBERNETES_VERSION: Final = "v1.37.2"
"""The version of a job config when neither the settings nor the caller give one."""


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


def controlled_by(metadata: ObjectMeta | None, uid: str) -> bool:
    """``metadata`` names the task of ``uid`` as its controller (the ownerReference
    every object we build carries): only such an object is ours to patch or delete."""
    refs = (metadata.ownerReferences if metadata is not None else None) or []
    return bool(uid) and any(r.controller and r.uid == uid for r in refs)


def controller_text(metadata: ObjectMeta | None) -> str:
    """Who controls an object, for a message (no secret: kinds, names, uids)."""
    refs = (metadata.ownerReferences if metadata is not None else None) or []
    ctl = [r for r in refs if r.controller]
    return f"{ctl[0].kind} {ctl[0].name} (uid {ctl[0].uid})" if ctl else "nothing"


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
    host_key_store: str | None = None,
    packages: ResolvedPackages | None = None,
) -> JobConfig:
    """The job config for ``machines`` (name -> IP): the settings' ``job`` defaults
    (packages, template, hostKeyPolicy, concurrency, ...), then the task's facts, the
    proxy node's host-key store and where its packages come from (``packages``,
    resolved by the caller; its version is the job's ``kubernetesVersion``)."""
    _, _, label, _ = _require(task)
    data: dict[str, Any] = (defaults or JobDefaults()).model_dump(by_alias=True)
    data.update(
        sshPort=task.spec.ssh_port,
        taskLabel=label,
        apiServer=cluster.endpoint,
        caCertHash=cluster.ca_cert_hash,
        hostKeyStore=host_key_store,
    )
    if task.spec.join_template is not None:  # the task's choice wins over the settings'
        data["template"] = named_template(task.spec.join_template)
    if packages is not None:
        data.update(package_config(packages))
    data["kubernetesVersion"] = (
        packages.version
        if packages
        else data.get("kubernetesVersion") or DEFAULT_KUBERNETES_VERSION
    )
    return JobConfig.from_plan(dict(machines), **data)


def package_config(packages: ResolvedPackages) -> dict[str, Any]:
    """The job config's package fields for ``packages`` (``source: job`` keeps the
    settings' ``job.packages``): a directory of ``<arch>/<tarball>`` where the source
    is mounted (``package_mounts``), or the URLs the job fetches first."""
    match packages.source:
        case "hostPath" | "image":
            inner = IMAGE_ROOT if packages.source == "image" and _image_volume(packages) else ""
            root = f"{PACKAGES_DIR}{inner}/{packages.version}"
            return {"packages": {}, "packageRoot": root}
        case "url":
            urls = {a: u.model_dump(by_alias=True) for a, u in (packages.urls or {}).items()}
            return {"packages": {}, "packageUrls": urls, "downloadDir": DOWNLOAD_DIR}
        case _:
            return {}


def _image_volume(packages: ResolvedPackages) -> bool:
    return packages.image is not None and packages.image.mount == "volume"


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
) -> Secret:
    """The task's Secret: the bootstrap token, a copy of the SSH credential (``passwd``
    or ``sshkey`` from the user's Secret, as raw bytes; other keys are not copied) and
    the host keys the user trusts (pins are the proxy node's, not the task's:
    ``build_host_key_store``). ``repr`` of the result holds the secret: never log it."""
    data = {TOKEN_KEY: _b64(token.value)}
    for key in (CREDENTIAL_PASSWORD_KEY, CREDENTIAL_SSHKEY_KEY):
        if credential is not None and key in credential:
            data[key] = _b64(credential[key])
    if known_hosts:
        data[KNOWN_HOSTS_KEY] = _b64(known_hosts)
    return Secret(
        apiVersion="v1",
        kind="Secret",
        type="Opaque",
        metadata=_meta(task, secret_name(task)),
        data=data,
    )


CREDENTIAL_KEYS: Final = (CREDENTIAL_PASSWORD_KEY, CREDENTIAL_SSHKEY_KEY)


def strip_credential_patch() -> dict[str, Any]:
    """A merge patch of the task's Secret that removes the SSH credential copy (the
    token, known hosts and pins stay): applied as soon as no Job of the task needs
    it; the next round copies the user's Secret afresh (a rotated one included)."""
    return {"data": dict.fromkeys(CREDENTIAL_KEYS)}


def build_token_secret(task: NodeTask, token: BootstrapToken) -> Secret:
    """The kube-system Secret that makes ``token`` valid for this task only: its
    groups are penetrator's (may create CSRs; never auto-approved) and the task's
    (the operator approves a CSR only for a node of this task's plan), and it is
    owned by the task (removed with it; it expires with the round anyway)."""
    body = bootstrap_token_secret(
        token,
        f"penetrator: joins the machines of NodeTask {task.name}",
        {**MANAGED_BY, TASK_NAME_LABEL: task.name[:63].rstrip("-.")},
        groups=task_token_groups(task.metadata.uid or ""),
        owner=owner_reference(task).to_dict(),
    )
    return cast(Secret, Secret.from_dict(body))


# --- the Job ---------------------------------------------------------------------------------


def needs_root(settings: Settings) -> bool:
    """Only a package server on a port below 1024 needs root (with NET_BIND_SERVICE
    only); the job is otherwise an SSH and HTTPS client that reads mounted files."""
    port = settings.job.http_port
    return host_network(settings) and 0 < port < PRIVILEGED_PORTS


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
        by_name = NodeSelectorRequirement(
            key=NODE_NAME_FIELD, operator="In", values=[task.spec.proxy_node]
        )
        term = NodeSelectorTerm(matchFields=[by_name])
    else:
        req = NodeSelectorRequirement(key=settings.job_pod.cloud_node_label, operator="Exists")
        term = NodeSelectorTerm(matchExpressions=[req])
    return Affinity(
        nodeAffinity=NodeAffinity(
            requiredDuringSchedulingIgnoredDuringExecution=NodeSelector(nodeSelectorTerms=[term])
        )
    )


def job_resources(settings: Settings, machines: int) -> ResourceRequirements:
    """Requests from the settings' per-machine formulas; limits: twice the memory
    (headroom over one measurement), four times the CPU (throttled bursts)."""
    pod = settings.job_pod
    memory, cpu = pod.memory_request_mib(machines), pod.cpu_request_millicores(machines)
    return ResourceRequirements(
        requests={"memory": f"{memory}Mi", "cpu": f"{cpu}m"},
        limits={"memory": f"{2 * memory}Mi", "cpu": f"{4 * cpu}m"},
    )


def _security(settings: Settings) -> tuple[PodSecurityContext, SecurityContext]:
    """Non-root (the image's user; fsGroup makes the 0400 Secret files group-readable)
    unless a privileged port needs root; always: no privilege escalation, a read-only
    root filesystem, every capability dropped (but NET_BIND_SERVICE for that port),
    the runtime's default seccomp profile."""
    seccomp = SeccompProfile(type="RuntimeDefault")
    root = needs_root(settings)
    uid = 0 if root else settings.job_pod.run_as_user
    pod = PodSecurityContext(
        runAsNonRoot=not root,
        runAsUser=uid,
        runAsGroup=uid,
        fsGroup=None if root else uid,
        seccompProfile=seccomp,
    )
    container = SecurityContext(
        allowPrivilegeEscalation=False,
        privileged=False,
        readOnlyRootFilesystem=True,
        capabilities=Capabilities(drop=["ALL"], add=["NET_BIND_SERVICE"] if root else None),
        seccompProfile=seccomp,
    )
    return pod, container


def _api_access(settings: Settings) -> Volume:
    """The service-account token as the kubelet would mount it, but expiring with the
    round (the Job's deadline and a margin): the job only writes its results
    ConfigMap and reads Nodes, for this round only."""
    seconds = max(MIN_TOKEN_SECONDS, settings.job_pod.deadline_seconds + TOKEN_MARGIN_SECONDS)
    return Volume(
        name="api-access",
        projected=ProjectedVolumeSource(
            sources=[
                VolumeProjection(
                    serviceAccountToken=ServiceAccountTokenProjection(
                        path="token", expirationSeconds=seconds
                    )
                ),
                VolumeProjection(
                    configMap=ConfigMapProjection(
                        name="kube-root-ca.crt", items=[KeyToPath(key="ca.crt", path="ca.crt")]
                    )
                ),
                VolumeProjection(
                    downwardAPI=DownwardAPIProjection(
                        items=[
                            DownwardAPIVolumeFile(
                                path="namespace",
                                fieldRef=ObjectFieldSelector(fieldPath="metadata.namespace"),
                            )
                        ]
                    )
                ),
            ]
        ),
    )


PackageMounts = tuple[list[Volume], list[VolumeMount], list[Container]]


def package_mounts(
    packages: ResolvedPackages | None, settings: Settings, security: SecurityContext
) -> PackageMounts:
    """The volumes, the job container's mounts and the init containers that bring the
    packages into the pod: the proxy node's directory (hostPath, read-only, type
    Directory: a missing one fails the pod's start, which the operator reports), the
    package image (an image volume, or an init container copying its tree into an
    emptyDir), or an emptyDir the job fetches the URLs into."""
    if packages is None or packages.source == "job":
        return [], [], []
    mount = VolumeMount(name="packages", mountPath=PACKAGES_DIR, readOnly=True)
    if packages.source == "hostPath":
        path = HostPathVolumeSource(path=packages.host_path or "", type="Directory")
        return [Volume(name="packages", hostPath=path)], [mount], []
    if packages.source == "url":
        size = settings.packages.download_size_limit
        volume = Volume(name="packages", emptyDir=EmptyDirVolumeSource(sizeLimit=size))
        return [volume], [VolumeMount(name="packages", mountPath=DOWNLOAD_DIR)], []
    image = packages.image
    assert image is not None, "resolve() checks the image"
    if image.mount == "volume":
        source = ImageVolumeSource(reference=image.reference, pullPolicy=image.pull_policy)
        return [Volume(name="packages", image=source)], [mount], []
    copy = Container(
        name="packages",
        image=image.reference,
        imagePullPolicy=image.pull_policy,
        command=[*image.copy_command, PACKAGES_DIR],
        resources=ResourceRequirements(
            requests={"memory": "32Mi", "cpu": "50m"}, limits={"memory": "128Mi", "cpu": "500m"}
        ),
        securityContext=security,
        terminationMessagePolicy="FallbackToLogsOnError",
        volumeMounts=[VolumeMount(name="packages", mountPath=PACKAGES_DIR)],
    )
    volume = Volume(
        name="packages",
        emptyDir=EmptyDirVolumeSource(sizeLimit=settings.packages.download_size_limit),
    )
    return [volume], [mount], [copy]


def build_job(
    task: NodeTask,
    settings: Settings,
    round_: int = 0,
    machines: int | None = None,
    packages: ResolvedPackages | None = None,
) -> Job:
    """The task's one Job: ``backoffLimit: 0`` (rounds are the operator's business),
    ``activeDeadlineSeconds`` from settings, on the proxy node (node affinity on its
    name, ``matchFields metadata.name``) or, in direct mode, on the control plane; the
    usual control-plane taints tolerated; config and credentials mounted read-only, the
    Secret with mode 0400; the node's network when the machines pull the package over
    HTTP (``host_network``). Locked down as a real kubelet runs it (``_security``):
    the only writable paths are the /tmp emptyDir and the termination log; resources
    scaled to ``machines`` (default: the task's); the packages' source mounted
    (``package_mounts``). The job learns everything else from its config (no
    environment)."""
    job_name, cm, _, _ = _require(task)
    meta = _meta(task, job_name, {ROUND_ANNOTATION: str(round_)})
    pod_labels = dict(meta.labels or {})
    pod_settings = settings.job_pod
    pod_security, container_security = _security(settings)
    count = len(task.spec.plan()) if machines is None else machines
    pkg_volumes, pkg_mounts, init = package_mounts(packages, settings, container_security)
    container = Container(
        name="install",
        image=pod_settings.image,
        imagePullPolicy=pod_settings.image_pull_policy,
        command=job_argv(task, settings),
        resources=job_resources(settings, count),
        securityContext=container_security,
        terminationMessagePath=TERMINATION_LOG,
        terminationMessagePolicy="FallbackToLogsOnError",
        volumeMounts=[
            VolumeMount(name="config", mountPath=CONFIG_DIR, readOnly=True),
            VolumeMount(name="credentials", mountPath=CREDENTIALS_DIR, readOnly=True),
            VolumeMount(name="api-access", mountPath=SERVICE_ACCOUNT_DIR, readOnly=True),
            VolumeMount(name="tmp", mountPath=TMP_DIR),
            *pkg_mounts,
        ],
    )
    pod = PodSpec(
        restartPolicy="Never",
        serviceAccountName=job_service_account_name(task),
        automountServiceAccountToken=False,  # ours is "api-access", short-lived
        enableServiceLinks=False,
        hostNetwork=host_network(settings) or None,
        dnsPolicy="ClusterFirstWithHostNet" if host_network(settings) else None,
        securityContext=pod_security,
        affinity=_affinity(task, settings),
        tolerations=list(CONTROL_PLANE_TOLERATIONS),
        initContainers=init or None,
        containers=[container],
        volumes=[
            Volume(name="config", configMap=ConfigMapVolumeSource(name=cm)),
            Volume(
                name="credentials",
                secret=SecretVolumeSource(
                    secretName=secret_name(task), defaultMode=SECRET_FILE_MODE
                ),
            ),
            _api_access(settings),
            Volume(name="tmp", emptyDir=EmptyDirVolumeSource(sizeLimit=TMP_SIZE_LIMIT)),
            *pkg_volumes,
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


def build_job_role(task: NodeTask, host_key_store: str | None = None) -> Role:
    """Get and patch on the task's results ConfigMap and its proxy node's host-key
    store, by name: a Job cannot touch another task's results, nor any other
    ConfigMap."""
    job_name, _, _, _ = _require(task)
    names = [results_name(task)] + ([host_key_store] if host_key_store else [])
    return Role(
        apiVersion="rbac.authorization.k8s.io/v1",
        kind="Role",
        metadata=_meta(task, job_name),
        rules=[
            PolicyRule(
                apiGroups=[""],
                resources=["configmaps"],
                resourceNames=names,
                verbs=["get", "patch"],
            )
        ],
    )


def build_host_key_store(name: str, proxy_node: str | None) -> ConfigMap:
    """A proxy node's host-key store, empty (``penetrator.api.hostkeys``): the
    operator's, owned by no task (pins outlive tasks)."""
    return ConfigMap(
        apiVersion="v1",
        kind="ConfigMap",
        metadata=ObjectMeta(
            name=name,
            namespace=NAMESPACE,
            labels=dict(MANAGED_BY),
            annotations={STORE_PROXY_ANNOTATION: proxy_node or DIRECT},
        ),
        data={STORE_PINS_KEY: ""},
    )


def job_service_account_name(task: NodeTask) -> str:
    job_name, _, _, _ = _require(task)
    return job_name


def build_job_service_account(task: NodeTask) -> ServiceAccount:
    """The task's own ServiceAccount (no token mounted by default: the Job projects a
    short-lived one). Its rights: the round's Role (the results ConfigMap) and, by
    its namespace's group, reading Nodes (the chart); never writing them."""
    return ServiceAccount(
        apiVersion="v1",
        kind="ServiceAccount",
        metadata=_meta(task, job_service_account_name(task)),
        automountServiceAccountToken=False,
    )


def build_job_role_binding(task: NodeTask) -> RoleBinding:
    job_name, _, _, _ = _require(task)
    return RoleBinding(
        apiVersion="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        metadata=_meta(task, job_name),
        roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=job_name),
        subjects=[
            Subject(kind="ServiceAccount", name=job_service_account_name(task), namespace=NAMESPACE)
        ],
    )
