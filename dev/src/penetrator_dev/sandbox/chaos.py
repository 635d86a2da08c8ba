"""The faults a chaos run injects into the sandbox's cluster, behind one small
interface (``ClusterFaults``), so the way pods run can change under the tests: the
node agent runs each pod as a host process and records its PID
(``NodeAgentFaults``); on real nodes the operator's container is killed through its
node's containerd (``RealNodeFaults``), and the kubelet restarts it.

Every method returns once the fault is over and the thing is back (a new operator
process runs, the apiserver serves again), each wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.cluster import SandboxCluster, restart_control_plane
from penetrator_dev.sandbox.lifecycle import Sandbox, SandboxError
from penetrator_dev.sandbox.state import start_ticks

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


class NodeAgentFaults:
    """``ClusterFaults`` of the sandbox's node agent (pods are host processes; the
    agent writes each pod's ``<pods dir>/<ns>_<name>_<uid>/process``: PID and
    start time) and its control plane (processes in the cloud namespace)."""

    def __init__(self, sb: Sandbox, info: SandboxCluster) -> None:
        self.sb, self.info = sb, info

    def _operator_pod_dir(self) -> Path | None:
        out = self.info.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", OPERATOR_SELECTOR, "-o", "json", check=False
        ).stdout
        pods = json.loads(out)["items"] if out.strip() else []
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(live) != 1:
            return None
        meta = live[0]["metadata"]
        d = self.info.pods_dir / f"{NAMESPACE}_{meta['name']}_{meta['uid']}"
        return d if d.is_dir() else None

    def _operator_process(self) -> tuple[int, int] | None:
        """(PID, start ticks) of the operator's running process, if it runs."""
        d = self._operator_pod_dir()
        try:
            pid_text, ticks_text = (d / "process").read_text().split() if d else ("0", "0")
        except (FileNotFoundError, ValueError):
            return None
        pid, ticks = int(pid_text), int(ticks_text)
        return (pid, ticks) if pid and ticks and start_ticks(pid) == ticks else None

    def kill_operator(self, timeout_s: float = 120.0) -> str:
        pid, _ = _wait(self._operator_process, "the operator's process", timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its process group: the whole container
        _wait(
            lambda: ((p := self._operator_process()) is not None and p[0] != pid) or None,
            "the node agent to start the operator again",
            timeout_s,
        )
        return str(pid)

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        self.info.kubectl("delete", "pod", "-n", namespace, name, "--wait=true", timeout=180)

    def restart_apiserver(self) -> None:
        restart_control_plane(self.sb, "kube-apiserver")

    def restart_etcd(self) -> None:
        restart_control_plane(self.sb, "etcd")


class RealNodeFaults(NodeAgentFaults):
    """``ClusterFaults`` of real nodes: the operator's container is SIGKILLed by its
    node's containerd (``ctr tasks kill``), as a crash; its kubelet restarts it."""

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


def cluster_faults(sb: Sandbox, info: SandboxCluster) -> ClusterFaults:
    """The faults of this sandbox's kind of nodes (the one place to switch)."""
    return RealNodeFaults(sb, info) if info.nodes == "real" else NodeAgentFaults(sb, info)
