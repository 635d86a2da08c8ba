"""The operator's apply side (``Runtime``) in-process against the real control
plane: a task without a webhook gets its plan written into it by the operator (the
webhook's function), its first round's objects are created from the decided
actions, a DeleteJob takes the Job's rights with it, and API requests are counted by
the client's event hook (observing costs a fixed number of them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from prometheus_client import generate_latest

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NodeTask,
    TaskPhase,
    is_generated_name,
)
from penetrator.api.settings import load_settings
from penetrator.k8s.builders import results_name, secret_name
from penetrator.k8s.client import NodeTaskResource, make_client
from penetrator.operator.metrics import Metrics
from penetrator.operator.runtime import Runtime
from penetrator.plan.reconcile import Decision, DeleteJob
from penetrator_dev.sandbox.deploy import foundation
from penetrator_dev.testenv.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
NS = "edge-system"


@pytest.fixture(scope="module")
def edge(cluster: ControlPlane, crd: None) -> ControlPlane:
    cluster.kubectl("apply", "-f", "-", input=foundation(("Namespace",)))
    login = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rt-login", "namespace": NS},
        "stringData": {"passwd": "rt-password"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(login))
    return cluster


@pytest.fixture
async def runtime(edge: ControlPlane) -> AsyncIterator[Runtime]:
    settings = load_settings(
        {"job": {"packages": {"amd64": "/p.tgz"}}, "metricsPort": 0, "fieldManager": "rt-test"}
    )
    client = make_client(edge.kubeconfig, field_manager="rt-test")
    yield Runtime(client, settings, Metrics())
    await client.close()


async def _task(rt: Runtime, name: str) -> dict[str, Any]:
    body: dict[str, Any] = (await rt.client.get(NodeTaskResource, name)).to_dict()  # type: ignore[no-untyped-call]
    return body


async def _exists(rt: Runtime, res: Any, name: str) -> bool:
    try:
        await rt.client.get(res, name, namespace=NS)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True


async def test_a_task_without_webhook_is_planned_then_its_round_applied(
    edge: ControlPlane, runtime: Runtime
) -> None:
    name = "rt-add"
    ips = ["10.77.0.1", "10.77.0.2", "10.77.0.1"]
    task = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": name},
        "spec": {"nodeNamePrefix": "edge", "targetMachines": ips, "sshCredential": "rt-login"},
    }
    edge.kubectl("create", "-f", "-", input=json.dumps(task))
    try:
        # step 1: the plan, written into the task (as the webhook would on create)
        first = await _task(runtime, name)
        assert await runtime.step(first, {}) == 0.5
        planned = NodeTask.from_dict(await _task(runtime, name))
        # a step on the task as read before that draws no second plan
        assert await runtime.step(first, {}) == 0.5
        assert NodeTask.from_dict(await _task(runtime, name)) == planned
        names = planned.spec.plan()
        assert sorted(names.values()) == ["10.77.0.1", "10.77.0.2"]
        assert all(is_generated_name("edge", n) for n in names)
        assert planned.spec.node_names_generated
        label = planned.task_label
        assert label is not None
        assert label.startswith(f"{name}-")
        # the objects' names come from the uid; the annotations show them
        ours = f"nodetask-{planned.metadata.uid}"
        assert planned.job_name == planned.configmap_name == ours
        assert planned.metadata.annotations[JOB_NAME_ANNOTATION] == ours
        assert planned.metadata.annotations[CONFIGMAP_NAME_ANNOTATION] == ours

        # step 2: round 1 from the decided actions
        await runtime.step(await _task(runtime, name), {})
        task_now = NodeTask.from_dict(await _task(runtime, name))
        assert task_now.spec.plan() == names  # planned once
        assert task_now.status.nodetask_status is TaskPhase.CREATING
        assert task_now.status.node_status == names
        job_name = task_now.job_name
        assert job_name is not None
        for res, obj in (
            (ConfigMap, task_now.configmap_name),
            (ConfigMap, results_name(task_now)),
            (Secret, secret_name(task_now)),
            (Role, job_name),
            (RoleBinding, job_name),
            (Job, job_name),
        ):
            assert await _exists(runtime, res, str(obj)), (res.__name__, obj)
        cm = await runtime.client.get(ConfigMap, str(task_now.configmap_name), namespace=NS)
        config = json.loads((cm.data or {})["config.json"])
        assert {m["name"]: m["ip"] for m in config["machines"]} == names
        assert "rt-password" not in json.dumps(cm.to_dict())  # type: ignore[no-untyped-call]

        # observing costs three requests whatever the cluster's size, counted by the hook,
        # and a fourth while a Job has not reported its last batch (its pods, by label)
        before = runtime.requests
        await runtime.observe(task_now)
        assert runtime.requests - before == 4
        scraped = generate_latest(runtime.metrics.registry).decode()
        for method in ("GET", "PATCH", "POST"):
            assert f'penetrator_api_requests_total{{method="{method}"}}' in scraped

        # DeleteJob: the Job goes (foreground) and its rights with it
        job = await runtime.client.get(Job, job_name, namespace=NS)
        uid = str(job.metadata.uid) if job.metadata else ""
        await runtime.apply(task_now, Decision((DeleteJob(job_name, uid),), task_now.status))
        assert not await _exists(runtime, Role, job_name)
        assert not await _exists(runtime, RoleBinding, job_name)
        # the Job is gone, or still being deleted (foreground): one look, not two
        left = [
            j
            async for j in runtime.client.list(
                Job, namespace=NS, fields={"metadata.name": job_name}
            )
        ]
        assert all(j.metadata and j.metadata.deletionTimestamp for j in left)
    finally:
        edge.kubectl("delete", "nt", name, "--ignore-not-found", "--wait=false")


async def test_an_object_of_the_tasks_name_it_does_not_control_is_left_alone(
    edge: ControlPlane, runtime: Runtime
) -> None:
    """A ConfigMap put under the task's object name before its first round (names come
    from the uid, which is known once the task exists): the round is refused on the
    task (ApiRefused, naming the object), the ConfigMap is neither applied over nor
    deleted."""
    name = "rt-owner"
    task = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": name},
        "spec": {"nodeNamePrefix": "edge", "targetMachines": ["10.77.1.1"],
                 "sshCredential": "rt-login"},
    }  # fmt: skip
    edge.kubectl("create", "-f", "-", input=json.dumps(task))
    cm_name = ""
    try:
        assert await runtime.step(await _task(runtime, name), {}) == 0.5  # the plan
        planned = NodeTask.from_dict(await _task(runtime, name))
        cm_name = str(planned.configmap_name)
        foreign = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": cm_name, "namespace": NS},
            "data": {"config.json": "someone else's"},
        }
        edge.kubectl("create", "-f", "-", input=json.dumps(foreign))
        await runtime.step(await _task(runtime, name), {})
        after = NodeTask.from_dict(await _task(runtime, name))
        cond = next(c for c in after.status.conditions if c.type == "Progressing")
        assert (cond.status, cond.reason) == ("False", "ApiRefused")
        assert f"ConfigMap {NS}/{cm_name} belongs to no task, not to this task" in cond.message
        cm = await runtime.client.get(ConfigMap, cm_name, namespace=NS)
        assert (cm.data or {}) == {"config.json": "someone else's"}
        assert not (cm.metadata and cm.metadata.ownerReferences)
        assert not await _exists(runtime, Job, str(planned.job_name))  # no round started
    finally:
        edge.kubectl("delete", "nt", name, "--ignore-not-found", "--wait=false")
        if cm_name:
            edge.kubectl("-n", NS, "delete", "configmap", cm_name, "--ignore-not-found")


def _token_kubeconfig(cp: ControlPlane, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with ``token`` only (a machine's join)."""
    import yaml

    admin = yaml.safe_load(Path(cp.kubeconfig).read_text())
    kc = {
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": "machine", "user": {"token": token}}],
        "contexts": [{"name": "machine", "context": {
            "cluster": admin["clusters"][0]["name"], "user": "machine"}}],
        "current-context": "machine",
    }  # fmt: skip
    path.write_text(yaml.safe_dump(kc))
    path.chmod(0o600)
    return path


def _csr(name: str, node: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    key = ec.generate_private_key(ec.SECP256R1())
    pem = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    import base64

    request = base64.b64encode(pem.public_bytes(serialization.Encoding.PEM)).decode()
    return json.dumps(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": request,
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
        }
    )


async def test_the_operator_approves_its_tasks_csrs_for_planned_names_only(
    edge: ControlPlane, runtime: Runtime, tmp_path: Path
) -> None:
    """A round's token (the real one, from the task's Secret) creates two kubelet
    CSRs: the planned name's is approved by the operator (not by kubeadm's
    auto-approval: ours is the only Approved condition), after the stale Node of that
    name is deleted; the other name's stays pending. Once no Job needs it, the
    task's Secret keeps the token but not the credential copy."""
    from lightkube.resources.certificates_v1 import CertificateSigningRequest
    from lightkube.resources.core_v1 import Node

    from penetrator.plan.reconcile import StripCredential
    from support import wait_for

    edge.kubectl("apply", "--server-side", "-f", "-", input=foundation(("ClusterRoleBinding",)))
    name = "rt-csr"
    task = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": name},
        "spec": {
            "nodeNamePrefix": "csr",
            "targetMachines": ["10.78.0.1"],
            "sshCredential": "rt-login",
        },
    }
    edge.kubectl("create", "-f", "-", input=json.dumps(task))
    csrs = ["rt-csr-planned", "rt-csr-other"]
    made_nodes: list[str] = []
    try:
        await runtime.step(await _task(runtime, name), {})  # the plan
        await runtime.step(await _task(runtime, name), {})  # round 1: token, Secret, Job
        t = NodeTask.from_dict(await _task(runtime, name))
        (planned,) = t.spec.plan()
        secret = await runtime.client.get(Secret, secret_name(t), namespace=NS)
        data = secret.data or {}
        assert "passwd" in data
        import base64

        token = base64.b64decode(data["token"]).decode()
        stale = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": planned}}
        made_nodes.append(planned)
        edge.kubectl("create", "-f", "-", input=json.dumps(stale))  # an older install
        kc = _token_kubeconfig(edge, token, tmp_path / "machine.kubeconfig")
        edge.kubectl(f"--kubeconfig={kc}", "create", "-f", "-", input=_csr(csrs[0], planned))
        edge.kubectl(f"--kubeconfig={kc}", "create", "-f", "-", input=_csr(csrs[1], "rt-control"))

        for csr_name, approve in ((csrs[0], True), (csrs[1], False)):
            verdict = await runtime.review_csr(csr_name, [t])
            assert verdict is not None
            assert verdict.approve is approve, verdict
        after = await runtime.client.get(CertificateSigningRequest, csrs[0])
        conds = list(after.status.conditions or []) if after.status else []
        assert [(c.type, c.reason) for c in conds] == [("Approved", "PenetratorApproved")]
        other = await runtime.client.get(CertificateSigningRequest, csrs[1])
        assert not (other.status and other.status.conditions)
        nodes = [n async for n in runtime.client.list(Node, fields={"metadata.name": planned})]
        assert nodes == []  # the stale Node went before the approval
        assert await runtime.review_csr(csrs[0], [t]) is None  # decided: left alone

        def signed() -> bool:
            got = edge.kubectl("get", "csr", csrs[0], "-o", "jsonpath={.status.certificate}")
            return bool(got.stdout.strip())

        wait_for(signed, "the approved CSR signed by the controller manager", 60)

        await runtime.apply(t, Decision((StripCredential(),), t.status))
        secret = await runtime.client.get(Secret, secret_name(t), namespace=NS)
        assert set(secret.data or {}) == {"token"}
    finally:
        edge.kubectl("delete", "csr", *csrs, "--ignore-not-found")
        made = [n for n in made_nodes if n]
        if made:
            edge.kubectl("delete", "node", "--ignore-not-found", *made)
