"""The rendered RBAC (deploy/penetrator.yaml) on the real API server, asked with
`kubectl auth can-i` as each account: a task's Job may read Nodes, never write
them; a task's bootstrap token may create CSRs, which kubeadm's auto-approval
does not cover (the operator approves them, for kubelet clients only)."""

from __future__ import annotations

import json

import pytest

from penetrator.api import NodeTask
from penetrator.k8s.bootstrap_token import task_token_groups
from penetrator.k8s.builders import build_job_service_account, job_service_account_name
from penetrator_dev.sandbox.deploy import foundation
from penetrator_dev.testenv.controlplane import ControlPlane
from support import nodetask

pytestmark = pytest.mark.cluster

NS = "edge-system"
OPERATOR = f"system:serviceaccount:{NS}:penetrator-operator"


@pytest.fixture(scope="module")
def rbac(cluster: ControlPlane) -> ControlPlane:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=foundation())
    return cluster


def can_i(cp: ControlPlane, *args: str) -> bool:
    """`kubectl auth can-i ARGS`: yes (exit 0) or no (exit 1); anything else fails."""
    out = cp.kubectl("auth", "can-i", *args, check=False)
    assert out.returncode in (0, 1), out.stderr
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), (answer, out.stderr)
    return answer == "yes"


def sar(cp: ControlPlane, user: str, verb: str, resource: str, group: str, name: str) -> bool:
    """A SubjectAccessReview for a service account (a signer's name holds '/', which
    `kubectl auth can-i` cannot take)."""
    ns = user.split(":")[2]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}"],
            "resourceAttributes": {
                "group": group, "resource": resource, "verb": verb, "name": name,
            },
        },
    }  # fmt: skip
    out = cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(out.stdout)["status"].get("allowed"))


def task_account(cp: ControlPlane) -> str:
    """A task's own ServiceAccount as the operator makes it (the builder's)."""
    body = nodetask(
        "rights",
        metadata={
            "uid": "6a1c2d3e-0000-4000-8000-00000000abcd",
            "labels": {"app.superedge.io/node-label": "rights-abc123"},
            "annotations": {
                "app.superedge.io/job-name": "rights-job",
                "app.superedge.io/configmap-name": "rights-cm",
            },
        },
        sshCredential="login",
        nodeNamesOverride={"edge-aaaaaa": "10.0.0.1"},
    )
    task = NodeTask.from_dict(body)
    account = build_job_service_account(task).to_dict()  # type: ignore[no-untyped-call]
    account["metadata"].pop("ownerReferences")  # no task object here to own it
    cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(account))
    return job_service_account_name(task)


def test_a_tasks_job_cannot_patch_or_delete_a_node(rbac: ControlPlane) -> None:
    sa = f"system:serviceaccount:{NS}:{task_account(rbac)}"
    for verb in ("patch", "delete", "update", "create"):
        assert not can_i(rbac, verb, "nodes", f"--as={sa}"), verb
        assert not can_i(rbac, verb, "nodes/some-node", f"--as={sa}"), verb
    assert not can_i(rbac, "patch", "nodes", "--subresource=status", f"--as={sa}")
    assert not can_i(rbac, "deletecollection", "nodes", f"--as={sa}")
    # what the job does need: is the machine a Node, is it Ready
    assert can_i(rbac, "get", "nodes", f"--as={sa}")
    assert can_i(rbac, "list", "nodes", f"--as={sa}")
    # and no Secret, no CSR approval
    assert not can_i(rbac, "get", "secrets", "-n", NS, f"--as={sa}")
    assert not can_i(
        rbac, "update", "certificatesigningrequests", "--subresource=approval", f"--as={sa}"
    )


def test_the_operator_approves_kubelet_client_csrs_only(rbac: ControlPlane) -> None:
    signer = "certificates.k8s.io"
    kubelet = "kubernetes.io/kube-apiserver-client-kubelet"
    assert sar(rbac, OPERATOR, "approve", "signers", signer, kubelet)
    for other in ("kubernetes.io/kube-apiserver-client", "kubernetes.io/kubelet-serving"):
        assert not sar(rbac, OPERATOR, "approve", "signers", signer, other), other
    assert can_i(
        rbac, "update", "certificatesigningrequests", "--subresource=approval", f"--as={OPERATOR}"
    )
    assert can_i(rbac, "delete", "nodes", f"--as={OPERATOR}")
    assert not can_i(rbac, "get", "secrets", "-n", "kube-system", f"--as={OPERATOR}")


def test_a_tasks_token_may_create_csrs_which_are_not_auto_approved(rbac: ControlPlane) -> None:
    groups = [f"--as-group={g}" for g in ("system:bootstrappers", *task_token_groups("u-1"))]
    token = ["--as=system:bootstrap:abcdef", *groups]
    assert can_i(rbac, "create", "certificatesigningrequests", *token)
    # kube-controller-manager's csrapproving approves a bootstrap CSR when its requester
    # may create this subresource (kubeadm grants it to its own group only)
    assert not can_i(
        rbac, "create", "certificatesigningrequests", "--subresource=nodeclient", *token
    )
