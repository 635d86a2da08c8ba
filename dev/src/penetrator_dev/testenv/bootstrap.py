"""The objects `kubeadm init` creates so that `kubeadm join` works.

Token discovery reads `cluster-info` anonymously; the bootstrap token's group
may create CSRs, which the controller manager approves and signs.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import yaml

from penetrator.k8s.bootstrap_token import BOOTSTRAP_GROUP, BootstrapToken, bootstrap_token_secret
from penetrator_dev.testenv.kubeconfig import kubeconfig_document

if TYPE_CHECKING:
    from penetrator_dev.testenv.controlplane import ControlPlane


def _binding(
    kind: str, name: str, role: str, subject: dict[str, str], namespace: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role" if kind == "RoleBinding" else "ClusterRole",
            "name": role,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **subject}],
    }


def kubeadm_objects(public_server: str, ca_pem: bytes) -> list[dict[str, Any]]:
    bootstrappers = {"kind": "Group", "name": BOOTSTRAP_GROUP}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": {"kubeconfig": kubeconfig_document(public_server, ca_pem)},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {
                "name": "kubeadm:bootstrap-signer-clusterinfo",
                "namespace": "kube-public",
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["cluster-info"],
                    "verbs": ["get"],
                }
            ],
        },
        _binding(
            "RoleBinding",
            "kubeadm:bootstrap-signer-clusterinfo",
            "kubeadm:bootstrap-signer-clusterinfo",
            {"kind": "User", "name": "system:anonymous"},
            namespace="kube-public",
        ),
        _binding(
            "ClusterRoleBinding",
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            bootstrappers,
        ),
        _binding(
            "ClusterRoleBinding",
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            bootstrappers,
        ),
        _binding(
            "ClusterRoleBinding",
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            {"kind": "Group", "name": "system:nodes"},
        ),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        },
        _binding("ClusterRoleBinding", "kubeadm:get-nodes", "kubeadm:get-nodes", bootstrappers),
    ]


def _apply(cp: ControlPlane, objects: list[dict[str, Any]]) -> None:
    cp.kubectl(
        "apply",
        "--server-side",
        "--field-manager=penetrator-testenv",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )


def apply_kubeadm_objects(cp: ControlPlane, public_server: str) -> None:
    _apply(cp, kubeadm_objects(public_server, cp.ca_cert_pem))


def create_bootstrap_token(
    cp: ControlPlane, ttl: dt.timedelta = dt.timedelta(hours=2)
) -> BootstrapToken:
    """A kubeadm-style bootstrap token, valid for `ttl` (negative: already expired)."""
    token = BootstrapToken.generate(dt.datetime.now(dt.UTC), ttl)
    _apply(cp, [bootstrap_token_secret(token, "penetrator testenv")])
    return token
