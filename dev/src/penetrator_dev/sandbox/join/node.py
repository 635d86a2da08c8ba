"""The Node and its Lease, as the kubelet writes them (builders and the few
calls), shared by the join program and the heartbeat service."""

from __future__ import annotations

import datetime as dt
from typing import Any

from penetrator_dev.sandbox.join.config import Taint
from penetrator_dev.sandbox.join.http import Connection, Response

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40  # the kubelet's default
KUBELET_VERSION = "v1.37.2-penetrator-sandbox"
ARCH_MAP = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
CAPACITY = {"cpu": "2", "memory": "4030000Ki", "pods": "110", "ephemeral-storage": "40Gi"}


class ApiError(Exception):
    def __init__(self, what: str, r: Response) -> None:
        super().__init__(f"{what}: HTTP {r.status}: {r.message()}")
        self.status = r.status


def go_arch(uname_m: str) -> str:
    """`uname -m` -> GOARCH (x86_64 -> amd64, aarch64 -> arm64)."""
    try:
        return ARCH_MAP[uname_m.strip()]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {uname_m.strip()!r} (supported: x86_64, aarch64)"
        ) from None


def now_rfc3339(t: dt.datetime | None = None) -> str:
    return (t or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro(t: dt.datetime | None = None) -> str:
    return (t or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_labels(name: str, arch: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
    }


def node_status(ip: str | None, name: str, arch: str, transition: str, now: str) -> dict[str, Any]:
    """The status the kubelet posts: Ready plus the three pressure conditions."""
    conds = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    addresses = [{"type": "Hostname", "address": name}]
    if ip:
        addresses.insert(0, {"type": "InternalIP", "address": ip})
    return {
        "conditions": [
            {
                "type": t,
                "status": s,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": now,
                "lastTransitionTime": transition,
            }
            for t, s, r, m in conds
        ],
        "addresses": addresses,
        "capacity": CAPACITY,
        "allocatable": CAPACITY,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "architecture": arch,
            "operatingSystem": "linux",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "osImage": "penetrator sandbox edge machine",
            "kernelVersion": "",
            "containerRuntimeVersion": "none://0",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def node_object(
    name: str, ip: str | None, arch: str, taints: tuple[Taint, ...], now: str
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = [
            {"key": t.key, "effect": t.effect, **({"value": t.value} if t.value else {})}
            for t in taints
        ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels(name, arch),
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": spec,
        "status": node_status(ip, name, arch, now, now),
    }


def lease_path(name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
    return f"{base}/{name}" if name else base


def lease_object(name: str, node_uid: str | None, now: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
        ]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now,
        },
    }


async def register_node(
    conn: Connection, name: str, ip: str | None, arch: str, taints: tuple[Taint, ...]
) -> tuple[str, str]:
    """Create the Node (or take over an existing one of that name, as the
    kubelet does); post a Ready status. Returns (uid, lastTransitionTime)."""
    now = now_rfc3339()
    r = await conn.request("POST", "/api/v1/nodes", node_object(name, ip, arch, taints, now))
    if r.status == 409:
        r = await conn.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            {"metadata": {"labels": node_labels(name, arch)}},
            content_type="application/strategic-merge-patch+json",
        )
        if r.status != 200:
            raise ApiError(f"updating the existing Node {name}", r)
    elif r.status != 201:
        raise ApiError(f"creating Node {name}", r)
    uid = str(r.json()["metadata"]["uid"])
    await post_status(conn, name, ip, arch, now)
    return uid, now


async def post_status(
    conn: Connection, name: str, ip: str | None, arch: str, transition: str
) -> None:
    patch = {"status": node_status(ip, name, arch, transition, now_rfc3339())}
    r = await conn.request(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        patch,
        content_type="application/strategic-merge-patch+json",
    )
    if r.status != 200:
        raise ApiError(f"posting the status of Node {name}", r)


async def renew_lease(conn: Connection, name: str, node_uid: str | None) -> None:
    """Renew (or create) the node's Lease in kube-node-lease."""
    now = now_micro()
    r = await conn.request(
        "PATCH",
        lease_path(name),
        {
            "spec": {
                "holderIdentity": name,
                "renewTime": now,
                "leaseDurationSeconds": LEASE_DURATION_S,
            }
        },
        content_type="application/merge-patch+json",
    )
    if r.status == 404:
        r = await conn.request("POST", lease_path(), lease_object(name, node_uid, now))
        if r.status == 409:  # created meanwhile
            return
        if r.status != 201:
            raise ApiError(f"creating the Lease of {name}", r)
        return
    if r.status != 200:
        raise ApiError(f"renewing the Lease of {name}", r)
