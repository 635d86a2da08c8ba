"""Real nodes in the sandbox (`sandbox up`): the control-plane and proxy
nodes are kubelets v1.37.2 on containerd 1.6; the operator Deployment of
deploy/penetrator.yaml runs from the image scripts/image.sh built, imported into the
node's containerd (no registry); `kubectl logs` and `kubectl exec` reach it through
the kubelet. Then `down`, also after a crash (every containerd, kubelet and shim
killed with SIGKILL), leaves no process, mount, namespace, cgroup, iptables chain or
changed sysctl of the sandbox."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.deploy import NAMESPACE, deploy_penetrator
from penetrator_dev.sandbox.lifecycle import (
    Sandbox,
    down,
    leftover_mounts,
    leftover_namespaces,
    leftover_pids,
)
from penetrator_dev.sandbox.state import state_dir
from support import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]


def sysctls() -> dict[str, str]:
    return {
        k: Path("/proc/sys", k.replace(".", "/")).read_text().strip()
        for k in kubeletnode.KUBELET_SYSCTLS
    }


def host_chains() -> set[str]:
    """The iptables chains of the host's network namespace (kubelet's and CNI's
    live in the nodes' namespaces; none may appear here)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(":")}


def host_netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def mount_namespaces_with(path: str) -> list[int]:
    """Processes whose mount namespace still mounts something under `path`."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if path in (d / "mountinfo").read_text():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def leftovers(name: str, before: dict[str, Any]) -> dict[str, Any]:
    """Everything of sandbox `name` still on the machine (all empty when clean)."""
    found = {
        "processes": leftover_pids(name),
        "mounts": leftover_mounts(name),
        "mount namespaces": mount_namespaces_with(str(state_dir(name)) + "/"),
        "namespaces": leftover_namespaces(name),
        "new netns": sorted(host_netns() - before["netns"] - set(leftover_namespaces(name))),
        "cgroups": [str(d) for d in kubeletnode.cgroup_dirs(name)],
        "new host iptables chains": sorted(host_chains() - before["chains"]),
        "changed sysctls": {k: v for k, v in sysctls().items() if before["sysctls"][k] != v},
        "state dir": [str(state_dir(name))] if state_dir(name).exists() else [],
        "new bind targets": sorted(bind_targets() - before["bind targets"]),
    }
    return {k: v for k, v in found.items() if v}


def bind_targets() -> set[str]:
    """The host paths each node binds its own directory over that exist."""
    return {p for p in realnode.PRIVATE_PATHS if os.path.exists(p)}


def snapshot() -> dict[str, Any]:
    return {
        "sysctls": sysctls(),
        "chains": host_chains(),
        "netns": host_netns(),
        "bind targets": bind_targets(),
    }


@pytest.fixture(scope="module")
def real_cluster(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any, dict[str, Any]]]:
    before = snapshot()
    sb = sandbox_factory(machines=1, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        deploy_penetrator(sb.name, info)
        yield sb, info, before
    finally:
        down(sb.name)


def operator_pod(info: Any) -> dict[str, Any]:
    out = info.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator",
        "-o", "json",
    ).stdout  # fmt: skip
    (pod,) = [p for p in json.loads(out)["items"] if p["status"].get("phase") == "Running"]
    return dict(pod)


def built_image_ids() -> set[str]:
    """The ids a CRI may report for the archive scripts/image.sh built: its config
    digest (the image id), or its manifest digest by name."""
    with tarfile.open(realnode.project_image()) as tar:

        def blob(name: str) -> Any:
            f = tar.extractfile(name)
            assert f is not None
            return json.load(f)

        manifest = blob("./index.json")["manifests"][0]["digest"]
        config = blob(f"./blobs/sha256/{manifest.split(':')[1]}")["config"]["digest"]
    return {config, f"docker.io/library/penetrator@{manifest}"}


def test_nodes_are_kubelets_on_containerd(real_cluster: Any) -> None:
    _, info, _ = real_cluster
    wide = info.kubectl("get", "nodes", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in wide.splitlines()[1:]}
    assert set(rows) == {"control-plane", "proxy-1"}, wide
    for row in rows.values():
        assert " Ready " in row, wide
        assert " v1.37.2 " in row, wide
        assert re.search(r"containerd://1\.6\.\d+", row), wide


def test_operator_runs_the_built_image(real_cluster: Any) -> None:
    _, info, _ = real_cluster
    pod = operator_pod(info)
    assert pod["spec"]["nodeName"] == "control-plane"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["imageID"] in built_image_ids()


def test_logs_and_exec_reach_the_kubelet(real_cluster: Any) -> None:
    _, info, _ = real_cluster
    name = operator_pod(info)["metadata"]["name"]
    # the readiness probe's requests are in the log the kubelet serves
    wait_for(
        lambda: "/healthz" in info.kubectl("logs", "-n", NAMESPACE, name).stdout,
        timeout=60,
        what="the operator's log through kubectl logs",
    )
    out = info.kubectl("exec", "-n", NAMESPACE, name, "--", "penetrator", "--help").stdout
    assert "Usage: penetrator" in out


def test_crash_then_down_leaves_nothing(real_cluster: Any) -> None:
    sb, _, before = real_cluster
    name = sb.name
    st = Sandbox.load(name).state
    nodes = [p for p in st.processes if p.role in realnode.ROLES]
    assert nodes
    for p in nodes:  # the crash: containerd and kubelet die, pods and shims stay
        os.kill(p.pid, signal.SIGKILL)
    assert kubeletnode.cgroup_pids(name), "the pods should outlive their kubelet"
    down(name)
    assert leftovers(name, before) == {}


def test_down_leaves_nothing(sandbox_factory: Any) -> None:
    before = snapshot()
    sb = sandbox_factory(machines=1, intranets=1)
    try:
        cluster_mod.start_cluster(sb)
        assert kubeletnode.cgroup_dirs(sb.name)
    finally:
        down(sb.name)
    assert leftovers(sb.name, before) == {}
