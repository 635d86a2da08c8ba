"""A task deleted and at once created again under the same name, as a user does with
the seed's examples (``kubectl delete nt nodes``, then apply the reinstall example,
also named ``nodes``): the deployed operator (with its webhook) treats the new task
as new every time. An add task named ``nodes`` joins one machine; then, 20 times,
``kubectl delete nt nodes`` (it returns once the task is gone) is followed at once by
a reinstall task ``nodes`` of that machine under its node name, which must turn ready,
each time in its first round (the first Job joins the machine).

Every round's objects are named from the new task (its uid), never from the name
alone, so nothing of the deleted task, still being garbage-collected, is taken for
the new task's."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from penetrator.api import CONFIGMAP_NAME_ANNOTATION, NODE_LABEL
from penetrator.api.results import ResultsDoc, results_configmap_name
from penetrator_dev.sandbox.lifecycle import Sandbox
from support import Deployment, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
TIMES = 20
READY_S = 120
"""Per try: a reinstall of one machine (the Job's pod, reset, join, Ready)."""


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def task_yaml(spec: dict[str, Any]) -> str:
    body = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": "nodes"},
        "spec": {**spec, "sshCredential": "login"},
    }
    return yaml.safe_dump(body)


DEPLOYMENT = Deployment(
    settings={
        "reconcile": {"pollInterval": 2, "backoffBase": 2},
        "job": {"timeouts": {"waitReady": 60}},
    },
)


def ready_task(info: Any, what: str) -> dict[str, Any]:
    def ready() -> Any:
        t = get(info, "nt", "nodes")
        return t if t and (t.get("status") or {}).get("nodetaskStatus") == "ready" else None

    try:
        return dict(wait_for(ready, what, READY_S))
    except AssertionError:
        print(json.dumps(get(info, "nt", "nodes"), indent=1)[-3000:])
        print(info.kubectl("-n", NS, "get", "jobs,pods,configmaps", check=False).stdout)
        pods = get(info, "pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")
        for p in (pods or {}).get("items", []):
            log = info.pod_log(p["metadata"]["name"], NS)
            print(log.read_text()[-6000:] if log and log.exists() else "no operator log")
        raise


def first_round_only(info: Any, task: dict[str, Any]) -> None:
    """The task got ready in its first round: no round (and no attempt of the
    machine's limit) was spent on a Job that could not join it."""
    cm = task["metadata"]["annotations"][CONFIGMAP_NAME_ANNOTATION]
    results = get(info, "configmap", "-n", NS, results_configmap_name(cm))
    doc = ResultsDoc.from_configmap_data(results["data"])
    assert doc is not None
    assert doc.round == 1, doc
    assert [m.attempts for m in doc.machines.values()] == [1], doc


def test_a_task_deleted_and_created_again_under_its_name_turns_ready_each_time(
    deployed: tuple[Sandbox, Any],
) -> None:
    sb, info = deployed
    ip = sb.topology.intranet(1).machines[0].ip
    proxy = {"proxyNode": info.proxy_nodes[1]}
    add = task_yaml({"nodeNamePrefix": "edge", "targetMachines": [ip]} | proxy)
    info.kubectl("apply", "-f", "-", input=add)
    task = ready_task(info, "the add task to be ready")
    first_round_only(info, task)
    (node,) = task["spec"]["nodeNamesOverride"]
    uids = {task["metadata"]["uid"]}
    for i in range(TIMES):
        info.kubectl("delete", "nt", "nodes", "--wait=true", "--timeout=60s")
        info.kubectl("apply", "-f", "-", input=task_yaml({"nodeNamesOverride": {node: ip}} | proxy))
        task = ready_task(info, f"re-created task {i + 1} of {TIMES} to be ready")
        assert task["metadata"]["uid"] not in uids  # a new task each time
        uids.add(task["metadata"]["uid"])
        label = task["metadata"]["labels"][NODE_LABEL]
        nodes = get(info, "nodes", "-l", f"{NODE_LABEL}={label}")["items"]
        assert [n["metadata"]["name"] for n in nodes] == [node]
        assert task["status"]["joined"] == 1
        first_round_only(info, task)
