"""A task's Events, found both ways users look, with the operator deployed from
deploy/penetrator.yaml (its own ServiceAccount and least-privilege RBAC) into the sandbox: after a
task whose one machine refuses the password, `kubectl describe nt TASK` (what users
reach for first) and `kubectl -n edge-system get events --field-selector
involvedObject.name=TASK` (compat.md, README) both list its round and failure Events,
each once. Also records why it takes two copies (``penetrator.k8s.events``): the API
server refuses, in edge-system, an Event naming the cluster-scoped task without a
namespace, in core/v1 and in events.k8s.io/v1 alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator_dev.sandbox.lifecycle import Sandbox
from penetrator_dev.sandbox.topology import Fault
from support import Deployment, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
TASK = "refused"
ROUND_AND_FAILURE = ("RoundStarted", "RoundFinished", "MachinesFailed", "Failed")


DEPLOYMENT = Deployment(
    settings={
        "reconcile": {
            "pollInterval": 2,
            "backoffBase": 2,
            "maxAttempts": 1,  # one round, then the task fails
        },
        "job": {"timeouts": {"connect": 8}, "retry": {"attempts": 1}},
    },
)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def task_manifest(ip: str, proxy: str) -> str:
    spec = {"nodeNamePrefix": "edge", "targetMachines": [ip], "sshCredential": "login"}
    body = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": TASK},
        "spec": {**spec, "proxyNode": proxy},
    }
    return yaml.safe_dump(body)


def described_reasons(text: str) -> list[str]:
    """The Reason column of the Events table that ends `kubectl describe`."""
    _, sep, table = text.partition("\nEvents:")
    assert sep, text
    rows = [line.split() for line in table.splitlines()]
    return [r[1] for r in rows if len(r) > 1 and r[0] in ("Normal", "Warning")]


@pytest.fixture(scope="module")
def failed(deployed: tuple[Sandbox, Any]) -> dict[str, Any]:
    """The task TASK over the one machine, which refuses the password, once failed."""
    sb, info = deployed
    (machine,) = sb.topology.intranet(1).machines
    sb.fault(1, machine.ip, Fault.WRONG_PASSWORD)
    try:
        info.kubectl("apply", "-f", "-", input=task_manifest(machine.ip, info.proxy_nodes[1]))

        def done() -> Any:
            t = get(info, "nt", TASK)
            return t if ((t or {}).get("status") or {}).get("nodetaskStatus") == "failed" else None

        try:
            return dict(wait_for(done, f"task {TASK} to fail", 300))
        except AssertionError:
            print(json.dumps(get(info, "nt", TASK), indent=1)[-3000:])
            raise
    finally:
        sb.fault(1, machine.ip, None)


def test_describe_and_edge_system_both_list_the_tasks_events(
    deployed: tuple[Sandbox, Any], failed: dict[str, Any]
) -> None:
    sb, info = deployed
    password = Path(sb.status()["ssh"]["password_file"]).read_text().strip()
    uid = failed["metadata"]["uid"]

    # The Failed Event is the task's last word, written after the status that says
    # so (edge-system's copy first, then the one describe finds).
    def described() -> str | None:
        text = str(info.kubectl("describe", "nt", TASK).stdout)
        return text if "Failed" in described_reasons(text) else None

    text = wait_for(described, "describe to list the Failed Event", 60)
    print(text)
    reasons = described_reasons(text)
    for reason in ROUND_AND_FAILURE:
        assert reason in reasons, text
    assert password not in text

    # the compat copies: in edge-system, naming the task with that namespace
    table = info.kubectl(
        "-n", NS, "get", "events", "--field-selector", f"involvedObject.name={TASK}"
    ).stdout  # fmt: skip
    for reason in ROUND_AND_FAILURE:
        assert reason in table, table
    in_edge_system = get(
        info, "events", "-n", NS, "--field-selector", f"involvedObject.name={TASK}"
    )["items"]  # fmt: skip
    for e in in_edge_system:
        assert e["involvedObject"]["namespace"] == NS
        assert e["involvedObject"]["uid"] == uid
    # each said once in each place: describe shows no copy twice
    for reason in ROUND_AND_FAILURE:
        assert reasons.count(reason) == [e["reason"] for e in in_edge_system].count(reason)

    # the copies describe finds: in default, the cluster-scoped task named without
    # a namespace, with its uid and apiVersion
    copies = get(info, "events", "-n", "default", "--field-selector", f"involvedObject.name={TASK}")
    assert copies["items"]
    for e in copies["items"]:
        ref = e["involvedObject"]
        assert "namespace" not in ref, ref
        assert (ref["kind"], ref["uid"]) == ("NodeTask", uid)
        assert ref["apiVersion"] == "nodetask.apps.superedge.io/v1beta1"
        assert e["reportingComponent"] == "penetrator-operator"


def event_without_namespace(api: str) -> str:
    """An Event in edge-system about the task, naming it without a namespace."""
    ref = {"apiVersion": "nodetask.apps.superedge.io/v1beta1", "kind": "NodeTask", "name": TASK}
    meta = {"generateName": "probe-", "namespace": NS}
    if api == "v1":
        body = {"apiVersion": "v1", "kind": "Event", "metadata": meta, "involvedObject": ref}
        body |= {"reason": "Probe", "message": "m", "type": "Normal"}
    else:
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": meta,
            "regarding": ref,
            "reason": "Probe",
            "note": "m",
            "type": "Normal",
            "action": "Probe",
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "penetrator.example/probe",
            "reportingInstance": "probe",
        }
    return yaml.safe_dump(body)


@pytest.mark.parametrize("api", ["v1", "events.k8s.io/v1"])
def test_edge_system_refuses_an_event_naming_the_task_without_namespace(
    deployed: tuple[Sandbox, Any], api: str
) -> None:
    """Why two copies: were this accepted, one Event would do for both look-ups."""
    _, info = deployed
    p = info.kubectl("create", "-f", "-", input=event_without_namespace(api), check=False)
    assert p.returncode != 0, p.stdout
    assert "does not match event.namespace" in p.stderr, p.stderr
