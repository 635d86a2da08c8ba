"""k8s.events: the Events about a task, built purely (where each copy lives, what it
names). That the API server takes them and kubectl finds them is tests/e2e/test_events.py."""

from __future__ import annotations

import datetime as dt

from lightkube.models.core_v1 import ObjectReference
from lightkube.resources.core_v1 import Event

from penetrator.api import API_VERSION, NodeTask
from penetrator.k8s.events import CLUSTER_EVENTS_NAMESPACE, build_events, task_reference

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TASK = NodeTask.from_dict(
    {
        "apiVersion": API_VERSION,
        "kind": "NodeTask",
        "metadata": {"name": "batch-1", "uid": "0123456789-uid"},
        "spec": {
            "sshCredential": "login",
            "nodeNamePrefix": "edge",
            "targetMachines": ["10.0.0.1"],
        },
    }
)


def build(once: bool = False, namespace: str = "edge-system", message: str = "m") -> list[Event]:
    return build_events(
        task_reference(TASK),
        namespace,
        "Warning",
        "MachinesFailed",
        message,
        now=NOW,
        instance="op-1",
        once=once,
    )


def test_the_task_is_named_as_cluster_scoped_with_its_uid() -> None:
    ref = task_reference(TASK)
    assert (ref.apiVersion, ref.kind, ref.name, ref.uid) == (
        API_VERSION,
        "NodeTask",
        "batch-1",
        "0123456789-uid",
    )
    assert ref.namespace is None


def test_one_copy_in_edge_system_and_one_describe_finds() -> None:
    compat, described = build()
    # edge-system: the API server wants the involvedObject in the Event's namespace
    assert compat.metadata is not None
    assert compat.metadata.namespace == "edge-system"
    assert compat.involvedObject.namespace == "edge-system"
    # default: no namespace, as kubectl describe's field selector asks for
    assert described.metadata is not None
    assert described.metadata.namespace == CLUSTER_EVENTS_NAMESPACE == "default"
    assert described.involvedObject.namespace is None
    for ev in (compat, described):
        ref = ev.involvedObject
        assert (ref.apiVersion, ref.kind, ref.name, ref.uid) == (
            API_VERSION,
            "NodeTask",
            "batch-1",
            "0123456789-uid",
        )
        assert (ev.type, ev.reason, ev.message, ev.count) == ("Warning", "MachinesFailed", "m", 1)
        assert ev.firstTimestamp == ev.lastTimestamp == NOW
        assert ev.eventTime is None  # core/v1 style: the form edge-system accepts
        assert ev.source is not None
        assert ev.source.component == "penetrator-operator"
        assert (ev.reportingComponent, ev.reportingInstance) == ("penetrator-operator", "op-1")


def test_names_generated_or_fixed_once() -> None:
    for ev in build():
        assert ev.metadata is not None
        assert (ev.metadata.name, ev.metadata.generateName) == (None, "batch-1.")
    for ev in build(once=True):
        assert ev.metadata is not None
        assert (ev.metadata.name, ev.metadata.generateName) == (
            "batch-1.machinesfailed.01234567",
            None,
        )


def test_operator_in_default_writes_one_copy() -> None:
    (only,) = build(namespace="default")
    assert only.metadata is not None
    assert only.metadata.namespace == "default"
    assert only.involvedObject.namespace is None


def test_long_message_is_cut() -> None:
    assert all(len(ev.message or "") == 1024 for ev in build(message="x" * 5000))


def test_a_node_is_named_the_same_way() -> None:
    node = ObjectReference(apiVersion="v1", kind="Node", name="edge-abc", uid="n-uid")
    _, described = build_events(
        node, "edge-system", "Normal", "Joined", "j", now=NOW, instance="op-1"
    )
    ref = described.involvedObject
    assert (ref.apiVersion, ref.kind, ref.name, ref.uid, ref.namespace) == (
        "v1",
        "Node",
        "edge-abc",
        "n-uid",
        None,
    )
