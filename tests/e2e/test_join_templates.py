"""Two tasks at once in the sandbox, one asking for the kubeadm template
(`spec.joinTemplate: kubeadm`) and one leaving it out (the default, edgeadm), both
created in one `kubectl apply` and both joining their machines through the operator
deployed from deploy/penetrator.yaml.

Each machine's own record (``edgeadm.log`` in its state directory) says which tool
ran on it: the kubeadm task's machines were reset and joined by `kubeadm` (the
sandbox's stand-in on the machine's PATH, sandbox/machines.py), the other task's by
the `edgeadm` of the install package, and never the other way round."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from penetrator.api import NODE_LABEL
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.state import state_dir
from support import add_task, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"


@pytest.fixture(scope="module")
def deployed(sandbox_factory: Any) -> Iterator[tuple[Sandbox, Any]]:
    sb = sandbox_factory(machines=4, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        deploy_penetrator(sb.name, info, {"reconcile": {"pollInterval": 2, "backoffBase": 2}})
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        yield sb, info
    finally:
        down(sb.name)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def journal(sb: Sandbox, ip: str) -> list[dict[str, Any]]:
    """The machine's record of join/reset runs (one line when each starts and ends)."""
    path = state_dir(sb.name) / "machines" / "1" / ip / "edgeadm.log"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_kubeadm_and_edgeadm_tasks_side_by_side(deployed: tuple[Sandbox, Any]) -> None:
    sb, info = deployed
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    proxy = info.proxy_nodes[1]
    with_kubeadm = add_task("with-kubeadm", ips[:2], proxy, prefix="kadm")
    with_kubeadm["spec"]["joinTemplate"] = "kubeadm"
    with_edgeadm = add_task("with-edgeadm", ips[2:], proxy, prefix="eadm")  # the default
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([with_kubeadm, with_edgeadm]))

    def both_ready() -> Any:
        tasks = [get(info, "nt", n) for n in ("with-kubeadm", "with-edgeadm")]
        done = all((t.get("status") or {}).get("nodetaskStatus") == "ready" for t in tasks)
        return tasks if done else None

    try:
        tasks = wait_for(both_ready, "both tasks to be ready", 300, interval=1)
    except AssertionError:
        for n in ("with-kubeadm", "with-edgeadm"):
            print(json.dumps(get(info, "nt", n), indent=1)[-3000:])
        raise

    for task, machines, tool in ((tasks[0], ips[:2], "kubeadm"), (tasks[1], ips[2:], "edgeadm")):
        name = task["metadata"]["name"]
        assert task["spec"].get("joinTemplate") == ("kubeadm" if tool == "kubeadm" else None)
        assert task["status"]["joined"] == task["status"]["planned"] == 2, name
        label = task["metadata"]["labels"][NODE_LABEL]
        nodes = get(info, "nodes", "-l", f"{NODE_LABEL}={label}")["items"]
        assert sorted(
            a["address"] for n in nodes for a in n["status"]["addresses"]
            if a["type"] == "InternalIP"
        ) == sorted(machines), name  # fmt: skip
        for n in nodes:
            ready = [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"]
            assert ready == ["True"], n["metadata"]["name"]
        for ip in machines:
            runs = journal(sb, ip)
            assert {r["tool"] for r in runs} == {tool}, (name, ip, runs)
            ends = [(r["command"], r["rc"]) for r in runs if r["event"] == "end"]
            assert ("reset", 0) in ends, (ip, runs)
            assert ends[-1] == ("join", 0), (ip, runs)
