"""k8s.builders, k8s.clusterinfo, k8s.observe: pure parts."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from penetrator.api import (
    API_VERSION,
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    NodeTask,
)
from penetrator.api.hostkeys import STORE_PROXY_ANNOTATION, store_name
from penetrator.api.jobconfig import InstallTemplate, JobConfig, JobDefaults
from penetrator.api.results import MachineResult, ResultsDoc, results_configmap_name
from penetrator.api.settings import Settings
from penetrator.api.templates import DEFAULT_JOIN_TEMPLATE, JoinTemplate, named_template
from penetrator.k8s.bootstrap_token import (
    BOOTSTRAP_GROUP,
    PENETRATOR_GROUP,
    BootstrapToken,
    task_group,
)
from penetrator.k8s.builders import (
    BuildError,
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
    results_name,
    secret_name,
    strip_credential_patch,
)
from penetrator.k8s.clusterinfo import ClusterInfoError, ca_cert_hash, parse_cluster_info
from penetrator.k8s.observe import installed_nodes, observe_job
from support import nodetask

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CLUSTER = ClusterInfo("https://172.31.0.1:6443", "sha256:" + "ab" * 32)
DEFAULTS = JobDefaults(packages={"amd64": "/opt/pkg/amd64.tgz"})


def settings(**groups: Any) -> Settings:
    """The defaults with these groups' fields (as in the settings file)."""
    return Settings.model_validate(groups)


def task(proxy: str | None = "proxy-1", **meta: Any) -> NodeTask:
    spec: dict[str, Any] = {
        "sshCredential": "login",
        "nodeNamesOverride": {"edge-aaaaaa": "10.0.0.1", "edge-bbbbbb": "10.0.0.2"},
        "sshPort": 2222,
    }
    if proxy is not None:
        spec["proxyNode"] = proxy
    metadata: dict[str, Any] = {
        "name": "nodes",
        "uid": "1234-uid",
        "labels": {NODE_LABEL: "nodes-x1y2z3"},
        # user-editable: the builders' names come from the uid, never from these
        "annotations": {JOB_NAME_ANNOTATION: "penetrator-operator", CONFIGMAP_NAME_ANNOTATION: "x"},
    }
    metadata.update(meta)
    return NodeTask.from_dict(nodetask("nodes", metadata=metadata, **spec))


def owner_ok(obj: Any, t: NodeTask) -> None:
    refs = obj.metadata.ownerReferences
    assert len(refs) == 1
    ref = refs[0]
    assert (ref.apiVersion, ref.kind, ref.name, ref.uid) == (
        API_VERSION,
        "NodeTask",
        t.name,
        "1234-uid",
    )
    assert ref.controller is True
    assert ref.blockOwnerDeletion is True
    assert obj.metadata.namespace == "edge-system"
    assert obj.metadata.labels[NODE_LABEL] == "nodes-x1y2z3"


def test_configmap_holds_the_job_config_and_no_secret() -> None:
    t = task()
    cfg = build_job_config(t, {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, DEFAULTS)
    cm = build_configmap(t, cfg, round_=2)
    owner_ok(cm, t)
    assert cm.metadata.name == "nodetask-1234-uid"
    data = json.loads(cm.data["config.json"])
    assert data["machines"] == [{"name": "edge-aaaaaa", "ip": "10.0.0.1"}]
    assert data["apiServer"] == "172.31.0.1:6443"
    assert data["caCertHash"] == CLUSTER.ca_cert_hash
    assert data["taskLabel"] == "nodes-x1y2z3"
    assert data["sshPort"] == 2222
    assert JobConfig.model_validate(data) == cfg  # the job reads back what we wrote
    text = cm.data["config.json"]
    assert not re.search(r"[a-z0-9]{6}\.[a-z0-9]{16}", text)  # no bootstrap token
    assert "passwd" not in text
    assert "PRIVATE KEY" not in text
    assert cm.metadata.annotations["nodetask.apps.superedge.io/round"] == "2"


def test_the_task_chooses_its_join_template_over_the_settings() -> None:
    custom = InstallTemplate(join=[["/opt/join", "{node_name}"]])
    settings = DEFAULTS.model_copy(update={"template": custom})
    assert build_job_config(task(), {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, settings).template == (
        custom
    )
    chosen = task().model_copy(
        update={"spec": task().spec.model_copy(update={"join_template": JoinTemplate.KUBEADM})}
    )
    cfg = build_job_config(chosen, {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, settings)
    assert cfg.template == named_template("kubeadm")
    plain = build_job_config(task(), {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, DEFAULTS)
    assert plain.template == named_template(DEFAULT_JOIN_TEMPLATE) == named_template("edgeadm")


def test_secret_holds_token_credential_and_known_hosts() -> None:
    t = task()
    token = BootstrapToken("abcdef", "0123456789abcdef", NOW)
    s = build_secret(
        t, token, {"passwd": b"hunter2", "other": b"x"}, known_hosts="10.0.0.1 ssh-ed25519 AAAA"
    )
    owner_ok(s, t)
    assert s.metadata.name == secret_name(t) == "nodetask-1234-uid-credentials"
    decoded = {k: base64.b64decode(v).decode() for k, v in s.data.items()}
    assert decoded == {
        "token": "abcdef.0123456789abcdef",
        "passwd": "hunter2",
        "known_hosts": "10.0.0.1 ssh-ed25519 AAAA",
    }
    assert s.stringData is None


def test_pins_are_the_proxy_nodes_not_the_tasks() -> None:
    """The task's Secret holds no pins; the proxy node's store (named by its uid) is
    owned by no task, named in the job config, and the Job may get and patch it."""
    t = task()
    token = BootstrapToken("abcdef", "0123456789abcdef", NOW)
    assert "host_key_pins" not in build_secret(t, token, {"sshkey": b"KEY"}).data
    name = store_name("0f8c2a54-3f7e-4d1b-9e4e-2b1f0c9d8a7e")
    store = build_host_key_store(name, "proxy-1")
    assert store.metadata.name == name
    assert store.metadata.namespace == "edge-system"
    assert not store.metadata.ownerReferences  # pins outlive tasks
    assert store.metadata.annotations == {STORE_PROXY_ANNOTATION: "proxy-1"}
    assert store.data == {"pins": ""}
    assert build_host_key_store(store_name(None), None).metadata.annotations == {
        STORE_PROXY_ANNOTATION: "direct"
    }
    config = build_job_config(t, {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, DEFAULTS, name)
    assert config.host_key_store == name
    assert (
        build_job_config(t, {"edge-aaaaaa": "10.0.0.1"}, CLUSTER, DEFAULTS).host_key_store is None
    )
    (rule,) = build_job_role(t, name).rules
    assert rule.resourceNames == [results_name(t), name]
    assert rule.verbs == ["get", "patch"]


def test_results_configmap_name_and_content() -> None:
    t = task()
    doc = ResultsDoc(round=1, machines={"edge-aaaaaa": MachineResult(ip="10.0.0.1", attempts=1)})
    cm = build_results_configmap(t, doc)
    owner_ok(cm, t)
    assert cm.metadata.name == results_name(t) == "nodetask-1234-uid-results"
    assert ResultsDoc.from_json(cm.data["results.json"]) == doc
    long = "a" * 253
    assert len(results_configmap_name(long)) == 253
    assert results_configmap_name(long).endswith("-results")


def test_job_on_the_proxy_node() -> None:
    t = task()
    j = build_job(t, settings(jobPod={"image": "img:1", "deadlineSeconds": 900}), round_=3)
    owner_ok(j, t)
    assert j.metadata.name == "nodetask-1234-uid"
    spec = j.spec
    assert spec.backoffLimit == 0
    assert spec.activeDeadlineSeconds == 900
    pod = spec.template.spec
    assert pod.restartPolicy == "Never"
    assert pod.serviceAccountName == "nodetask-1234-uid"  # the task's own (one per task)
    # by the Node's name, which a node cannot change (a node may set its own labels)
    (term,) = (
        pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms
    )
    assert term.matchExpressions is None
    (req,) = term.matchFields
    assert (req.key, req.operator, req.values) == ("metadata.name", "In", ["proxy-1"])
    assert {(x.key, x.operator, x.effect) for x in pod.tolerations} >= {
        ("node-role.kubernetes.io/control-plane", "Exists", "NoSchedule")
    }
    (c,) = pod.containers
    assert c.image == "img:1"
    assert c.command == [
        "penetrator",
        "job",
        "--config",
        "/etc/penetrator/job/config.json",
        "--credentials",
        "/etc/penetrator/credentials",
        "--report-configmap",
        "nodetask-1234-uid-results",
    ]
    assert all(m.readOnly for m in c.volumeMounts if m.name != "tmp")
    assert not c.env  # the job learns everything from its config, nothing from the environment
    vols = {v.name: v for v in pod.volumes}
    assert vols["config"].configMap.name == "nodetask-1234-uid"
    assert vols["credentials"].secret.secretName == "nodetask-1234-uid-credentials"
    assert vols["credentials"].secret.defaultMode == 0o400


def test_job_uses_the_node_network_only_when_machines_pull_over_http() -> None:
    # http (the default): the machines fetch from the job, and they reach the proxy
    # node's address, not a pod IP
    pod = build_job(task(), settings()).spec.template.spec
    assert pod.hostNetwork is True
    assert pod.dnsPolicy == "ClusterFirstWithHostNet"
    sftp = settings(job={"distribution": "sftp"})
    pod = build_job(task(), sftp).spec.template.spec
    assert pod.hostNetwork is None
    assert pod.dnsPolicy is None


def test_job_pod_is_locked_down_and_non_root() -> None:
    pod = build_job(task(), settings()).spec.template.spec
    sc = pod.securityContext
    assert (sc.runAsNonRoot, sc.runAsUser, sc.runAsGroup, sc.fsGroup) == (True, 65532, 65532, 65532)
    assert sc.seccompProfile.type == "RuntimeDefault"
    (c,) = pod.containers
    csc = c.securityContext
    assert csc.allowPrivilegeEscalation is False
    assert csc.privileged is False
    assert csc.readOnlyRootFilesystem is True
    assert csc.capabilities.drop == ["ALL"]
    assert not csc.capabilities.add
    assert csc.seccompProfile.type == "RuntimeDefault"
    assert c.terminationMessagePath == "/dev/termination-log"
    assert c.terminationMessagePolicy == "FallbackToLogsOnError"
    other = build_job(task(), settings(jobPod={"runAsUser": 1000})).spec.template.spec
    assert other.securityContext.runAsUser == other.securityContext.fsGroup == 1000


def test_job_runs_as_root_only_for_a_privileged_package_port() -> None:
    pod = build_job(task(), settings(job={"httpPort": 80})).spec.template.spec
    assert (pod.securityContext.runAsNonRoot, pod.securityContext.runAsUser) == (False, 0)
    csc = pod.containers[0].securityContext
    assert (csc.capabilities.drop, csc.capabilities.add) == (["ALL"], ["NET_BIND_SERVICE"])
    assert csc.readOnlyRootFilesystem is True
    assert csc.allowPrivilegeEscalation is False
    for groups in ({"httpPort": 8080}, {"httpPort": 80, "distribution": "sftp"}):
        pod = build_job(task(), settings(job=groups)).spec.template.spec
        assert pod.securityContext.runAsNonRoot is True
        assert not pod.containers[0].securityContext.capabilities.add


def test_job_writes_only_to_its_empty_dir() -> None:
    pod = build_job(task(), settings()).spec.template.spec
    (c,) = pod.containers
    writable = [m for m in c.volumeMounts if not m.readOnly]
    assert [(m.name, m.mountPath) for m in writable] == [("tmp", "/tmp")]
    vols = {v.name: v for v in pod.volumes}
    assert vols["tmp"].emptyDir.sizeLimit == "64Mi"


def test_job_token_expires_with_the_round() -> None:
    pod = build_job(task(), settings(jobPod={"deadlineSeconds": 900})).spec.template.spec
    assert pod.automountServiceAccountToken is False
    (mount,) = [m for m in pod.containers[0].volumeMounts if m.name == "api-access"]
    assert mount.mountPath == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert mount.readOnly is True
    sources = {v.name: v for v in pod.volumes}["api-access"].projected.sources
    token = sources[0].serviceAccountToken
    assert (token.path, token.expirationSeconds, token.audience) == ("token", 1500, None)
    assert sources[1].configMap.name == "kube-root-ca.crt"
    assert sources[1].configMap.items[0].path == "ca.crt"
    assert sources[2].downwardAPI.items[0].fieldRef.fieldPath == "metadata.namespace"
    pod = build_job(task(), settings(jobPod={"deadlineSeconds": 60})).spec.template.spec
    sources = {v.name: v for v in pod.volumes}["api-access"].projected.sources
    assert sources[0].serviceAccountToken.expirationSeconds == 660


@pytest.mark.parametrize(
    ("machines", "memory", "cpu"),
    [
        # 256 MiB + 0.25 MiB a machine (rounded up), CPU 100m + 0.5m a machine
        (1, ("257Mi", "514Mi"), ("100m", "400m")),
        (2, ("257Mi", "514Mi"), ("101m", "404m")),
        # 256 + 1250 MiB; the CPU request is capped at 1000m
        (5000, ("1506Mi", "3012Mi"), ("1000m", "4000m")),
        # the memory request is capped at 2048 MiB
        (100000, ("2048Mi", "4096Mi"), ("1000m", "4000m")),
    ],
)
def test_job_resources_scale_with_the_machines(
    machines: int, memory: tuple[str, str], cpu: tuple[str, str]
) -> None:
    res = (
        build_job(task(), settings(), machines=machines).spec.template.spec.containers[0].resources
    )
    assert (res.requests["memory"], res.limits["memory"]) == memory
    assert (res.requests["cpu"], res.limits["cpu"]) == cpu


def test_job_resources_default_to_the_tasks_machines_and_follow_the_settings() -> None:
    res = build_job(task(), settings()).spec.template.spec.containers[0].resources
    assert res.requests == {"memory": "257Mi", "cpu": "101m"}  # the task's 2 machines
    tuned = settings(
        jobPod={
            "memoryBaseMib": 64,
            "memoryPerMachineKib": 1024,
            "memoryMaxMib": 100,
            "cpuBaseMillicores": 50,
            "cpuPerMachineMillicores": 10,
            "cpuMaxMillicores": 60,
        }
    )
    res = build_job(task(), tuned, machines=30).spec.template.spec.containers[0].resources
    assert res.requests == {"memory": "94Mi", "cpu": "60m"}
    assert res.limits == {"memory": "188Mi", "cpu": "240m"}


def test_job_in_direct_mode_runs_on_the_control_plane() -> None:
    for proxy in (None, ""):
        j = build_job(task(proxy=proxy), settings(jobPod={"report": False}))
        pod = j.spec.template.spec
        term = pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
        req = term.nodeSelectorTerms[0].matchExpressions[0]
        assert (req.key, req.operator) == ("node-role.kubernetes.io/control-plane", "Exists")
        assert "--report-configmap" not in pod.containers[0].command


def test_a_tasks_job_role_names_its_results_configmap() -> None:
    t = task()
    role = build_job_role(t)
    owner_ok(role, t)
    assert role.metadata.name == "nodetask-1234-uid"
    (rule,) = role.rules
    assert rule.resources == ["configmaps"]
    assert rule.resourceNames == ["nodetask-1234-uid-results"]
    assert rule.verbs == ["get", "patch"]
    binding = build_job_role_binding(t)
    owner_ok(binding, t)
    assert (binding.roleRef.kind, binding.roleRef.name) == ("Role", "nodetask-1234-uid")
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "nodetask-1234-uid", "edge-system")
    ]


def test_each_task_has_its_own_service_account() -> None:
    t = task()
    account = build_job_service_account(t)
    owner_ok(account, t)  # owned by the task: removed with it
    assert (account.metadata.name, account.metadata.namespace) == (
        "nodetask-1234-uid",
        "edge-system",
    )
    assert account.automountServiceAccountToken is False  # the Job projects a short one
    other = task(
        name="other",
        uid="uid-other",
        annotations={JOB_NAME_ANNOTATION: "other-job", CONFIGMAP_NAME_ANNOTATION: "other-cm"},
    )
    assert build_job_service_account(other).metadata.name != account.metadata.name
    assert build_job(other, settings()).spec.template.spec.serviceAccountName == (
        build_job_service_account(other).metadata.name
    )


def test_builders_refuse_an_unprepared_task() -> None:
    t = task(uid=None)
    with pytest.raises(BuildError, match=r"metadata\.uid"):
        build_job(t, settings())
    t = task(labels={})
    with pytest.raises(BuildError, match="node-label"):
        build_job(t, settings())


def _ca() -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    import hashlib

    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return cert.public_bytes(Encoding.PEM), "sha256:" + hashlib.sha256(spki).hexdigest()


def test_cluster_info_server_and_ca_pin() -> None:
    pem, expected = _ca()
    assert ca_cert_hash(pem) == expected
    kubeconfig = (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ''\n  cluster:\n"
        "    server: https://172.31.0.1:6443\n"
        f"    certificate-authority-data: {base64.b64encode(pem).decode()}\n"
    )
    info = parse_cluster_info(kubeconfig)
    assert info == ClusterInfo("https://172.31.0.1:6443", expected)
    assert info.endpoint == "172.31.0.1:6443"
    assert parse_cluster_info(kubeconfig, "https://[fd00::1]:443").endpoint == "[fd00::1]:443"
    with pytest.raises(ClusterInfoError):
        parse_cluster_info("clusters: []")


def test_a_rounds_token_lives_as_long_as_its_job_and_a_margin() -> None:
    s = settings(jobPod={"deadlineSeconds": 900}, token={"marginSeconds": 300})
    assert s.token.ttl_seconds(s.job_pod.deadline_seconds) == 1200
    assert Settings().token.ttl_seconds(Settings().job_pod.deadline_seconds) == 3600 + 600
    t = task()
    token = BootstrapToken.generate(NOW, dt.timedelta(seconds=1200))
    secret = build_token_secret(t, token)
    assert (secret.metadata.name, secret.metadata.namespace) == (
        f"bootstrap-token-{token.token_id}",
        "kube-system",
    )
    (ref,) = secret.metadata.ownerReferences  # removed with the task
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("NodeTask", "nodes", "1234-uid", True)
    data = secret.stringData
    assert data["expiration"] == "2026-01-01T00:20:00Z"
    groups = data["auth-extra-groups"].split(",")
    # never kubeadm's auto-approved group; the task's own names its CSRs
    assert groups == [PENETRATOR_GROUP, task_group("1234-uid")]
    assert BOOTSTRAP_GROUP not in groups
    assert token.token_secret not in repr(token)


def test_the_credential_copy_is_stripped_but_token_and_pins_stay() -> None:
    t = task()
    token = BootstrapToken("abcdef", "0123456789abcdef", NOW)
    full = build_secret(t, token, {"passwd": b"pw", "other": b"x"}, "h ssh-ed25519 AAAA")
    patch = strip_credential_patch()
    assert patch == {"data": {"passwd": None, "sshkey": None}}
    # as the API server applies a merge patch: null removes the key
    data = {k: v for k, v in (full.data or {}).items() if k not in patch["data"]}
    assert set(data) == {"token", "known_hosts"}
    assert set(full.data or {}) == {"token", "known_hosts", "passwd"}


def test_observe_job_conditions() -> None:
    base = {"metadata": {"name": "j", "uid": "u"}}
    assert not observe_job(base).finished
    failing = {**base, "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}
    assert not observe_job(failing).finished  # pods may still run
    failed = {
        **base,
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
        },
    }
    o = observe_job(failed)
    assert (o.finished, o.succeeded, o.reason) == (True, False, "DeadlineExceeded")
    done = {**base, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert observe_job(done).succeeded
    deleting = {"metadata": {"name": "j", "uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert observe_job(deleting).deleting


def test_installed_nodes_by_label() -> None:
    nodes = [
        {
            "metadata": {"name": "a", "labels": {NODE_LABEL: "t-1"}},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "a"},
                    {"type": "InternalIP", "address": "10.0.0.1"},
                ]
            },
        },
        {"metadata": {"name": "b", "labels": {NODE_LABEL: "other"}}},
    ]
    assert installed_nodes(nodes, "t-1") == {"a": "10.0.0.1"}
