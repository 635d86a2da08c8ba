"""The objects `kubeadm init` creates so that `kubeadm join` works.

Token discovery reads `cluster-info` anonymously; the bootstrap token's group
may create CSRs, which the controller manager approves and signs. The real
`kubeadm join` (the sandbox's kubeadm edge machines) also reads
`kube-system/kubeadm-config` (the ClusterConfiguration) and
`kube-system/kubelet-config` (the KubeletConfiguration every joining kubelet gets),
as a bootstrapper and again as a node.
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


KUBELET_CONFIG: dict[str, Any] = {
    "apiVersion": "kubelet.config.k8s.io/v1beta1",
    "kind": "KubeletConfiguration",
    "authentication": {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": True},
        "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
    },
    "authorization": {"mode": "Webhook"},
    # the sandbox's machines: no systemd, cgroup v1, maybe swap (the node's own
    # cgroupRoot and --node-ip come per machine, as flags: KUBELET_EXTRA_ARGS)
    "cgroupDriver": "cgroupfs",
    "failCgroupV1": False,
    "failSwapOn": False,
    "rotateCertificates": True,
    # a small shared disk must not evict the test pods
    "evictionHard": {
        "memory.available": "20Mi",
        "nodefs.available": "1%",
        "imagefs.available": "1%",
    },
    "imageGCHighThresholdPercent": 100,
    "imageGCLowThresholdPercent": 99,
}


def kubeadm_join_objects(kubernetes_version: str) -> list[dict[str, Any]]:
    """kube-system/kubeadm-config and kubelet-config with the Roles `kubeadm init`
    makes so that bootstrappers and nodes may read them."""
    cluster_config = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": kubernetes_version,
        "clusterName": "kubernetes",
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {"dnsDomain": "cluster.local", "serviceSubnet": "10.96.0.0/12"},
    }
    readers = [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"},
    ]
    out: list[dict[str, Any]] = []
    for cm, role, key, doc in (
        ("kubeadm-config", "kubeadm:nodes-kubeadm-config", "ClusterConfiguration", cluster_config),
        ("kubelet-config", "kubeadm:kubelet-config", "kubelet", KUBELET_CONFIG),
    ):
        meta = {"name": role, "namespace": "kube-system"}
        out += [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": cm, "namespace": "kube-system"},
                "data": {key: yaml.safe_dump(doc)},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta,
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": [cm],
                        "verbs": ["get"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": readers,
            },
        ]
    return out


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
    version = yaml.safe_load(cp.kubectl("version", "-o", "yaml").stdout)["serverVersion"]
    _apply(
        cp,
        kubeadm_objects(public_server, cp.ca_cert_pem)
        + kubeadm_join_objects(version["gitVersion"]),
    )


def create_bootstrap_token(
    cp: ControlPlane, ttl: dt.timedelta = dt.timedelta(hours=2)
) -> BootstrapToken:
    """A kubeadm-style bootstrap token, valid for `ttl` (negative: already expired)."""
    token = BootstrapToken.generate(dt.datetime.now(dt.UTC), ttl)
    _apply(cp, [bootstrap_token_secret(token, "penetrator testenv")])
    return token
