"""The faults a chaos run injects into the sandbox's cluster, behind one small
interface (``ClusterFaults``), so the way the cluster runs can change under the
tests: on the sandbox's real nodes the operator's container is killed through its
node's containerd (``RealNodeFaults``), and the kubelet restarts it.

Every method returns once the fault is over and the thing is back (a new operator
process runs, the apiserver serves again), each wait bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.cluster import SandboxCluster, restart_control_plane
from penetrator_dev.sandbox.lifecycle import Sandbox, SandboxError

OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
NAMESPACE = "edge-system"


class ClusterFaults(Protocol):
    def kill_operator(self, timeout_s: float = 120.0) -> str:
        """SIGKILL the operator's process (its container crashes); returns what was
        killed (PID or container id) once another operator process runs."""

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        """Delete a pod as a user does (its grace period); returns once it is gone."""

    def restart_apiserver(self) -> None:
        """Restart kube-apiserver; returns once it serves again."""

    def restart_etcd(self) -> None:
        """Restart etcd; returns once the apiserver serves again."""


T = TypeVar("T")


def _wait(check: Callable[[], T | None], what: str, timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


class RealNodeFaults:
    """``ClusterFaults`` of the sandbox: the operator's container is SIGKILLed by its
    node's containerd (``ctr tasks kill``), as a crash, and its kubelet restarts it;
    the control plane's processes run in the cloud namespace."""

    def __init__(self, sb: Sandbox, info: SandboxCluster) -> None:
        self.sb, self.info = sb, info

    def _operator_container(self) -> tuple[str, str] | None:
        """(node, container id) of the operator's running, ready container."""
        out = self.info.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json", check=False
        ).stdout
        pods = json.loads(out)["items"] if out.strip() else []
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(live) != 1:
            return None
        statuses = live[0].get("status", {}).get("containerStatuses") or []
        running = [c for c in statuses if c.get("ready") and "running" in c.get("state", {})]
        if len(running) != 1:
            return None
        return live[0]["spec"]["nodeName"], running[0]["containerID"].split("://", 1)[1]

    def kill_operator(self, timeout_s: float = 120.0) -> str:
        node, container = _wait(self._operator_container, "the operator's container", timeout_s)
        ctr = realnode.ctr(self.sb.name, node)
        kubeletnode.run([*ctr, "tasks", "kill", "--signal", "SIGKILL", container])
        _wait(
            lambda: ((c := self._operator_container()) is not None and c[1] != container) or None,
            "the kubelet to start the operator again",
            timeout_s,
        )
        return container

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        self.info.kubectl("delete", "pod", "-n", namespace, name, "--wait=true", timeout=180)

    def restart_apiserver(self) -> None:
        restart_control_plane(self.sb, "kube-apiserver")

    def restart_etcd(self) -> None:
        restart_control_plane(self.sb, "etcd")


def cluster_faults(sb: Sandbox, info: SandboxCluster) -> ClusterFaults:
    """The faults of this sandbox's kind of nodes (the one place to switch)."""
    return RealNodeFaults(sb, info)
