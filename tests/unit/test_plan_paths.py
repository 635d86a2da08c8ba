"""One source of the plan: the webhook (on create) and the operator (no webhook)
call the same ``decide_plan`` and write the same fields of the task, so for the
same task and random source both paths leave the same plan in the task."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    NodeTask,
    is_generated_name,
)
from penetrator.plan.admission import mutate_create, validate_update
from penetrator.plan.prepare import (
    decide_plan,
    needs_plan,
    plan_missing,
    records_names_once,
)


def add_task(ips: list[str], name: str = "nodes", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": name, "uid": "u-1", **meta},
        "spec": {"sshCredential": "login", "nodeNamePrefix": "edge", "targetMachines": ips},
    }


def exist(taken: set[str]) -> Any:
    async def f(names: list[str]) -> set[str]:
        return {n for n in names if n in taken}

    return f


def merged(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The object after a merge patch (as the API server applies it)."""
    meta = dict(obj["metadata"])
    for part in ("labels", "annotations"):
        if part in patch.get("metadata", {}):
            both = {**meta.get(part, {}), **patch["metadata"][part]}
            meta[part] = {k: v for k, v in both.items() if v is not None}
    return {**obj, "metadata": meta, "spec": {**obj["spec"], **patch.get("spec", {})}}


def webhook_path(obj: dict[str, Any], seed: int, taken: set[str]) -> NodeTask:
    """The webhook plans on create; the operator adds the annotations from the uid
    (which the API server gives after the mutating webhook)."""
    plan = asyncio.run(mutate_create(obj, exist(taken), random.Random(seed)))
    stored = merged(obj, plan.patch())
    task = NodeTask.from_dict(stored)
    assert not task.spec.needs_names
    assert task.task_label
    assert not task.names_recorded
    rest = asyncio.run(plan_missing(task, random.Random(seed + 1), exist(taken))).patch()
    assert set(rest) == {"metadata"}
    assert set(rest["metadata"]) == {"annotations"}
    return NodeTask.from_dict(merged(stored, rest))


def operator_path(obj: dict[str, Any], seed: int, taken: set[str]) -> NodeTask:
    task = NodeTask.from_dict(obj)
    assert needs_plan(task)
    plan = asyncio.run(plan_missing(task, random.Random(seed), exist(taken)))
    after = merged(obj, plan.patch())
    assert records_names_once(obj["spec"], after["spec"])
    assert validate_update(obj, after) == []  # a webhook, if any, lets it through
    planned = NodeTask.from_dict(after)
    assert not needs_plan(planned)
    return planned


def the_plan(t: NodeTask) -> tuple[Any, ...]:
    return (t.spec.plan(), t.task_label, t.job_name, t.configmap_name)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    ips=st.lists(st.integers(1, 250).map(lambda i: f"10.0.0.{i}"), min_size=1, max_size=20),
)
def test_both_paths_leave_the_same_plan_in_the_task(seed: int, ips: list[str]) -> None:
    obj = add_task(ips)
    by_webhook = webhook_path(obj, seed, set())
    by_operator = operator_path(obj, seed, set())
    assert the_plan(by_webhook) == the_plan(by_operator)
    names = by_operator.spec.plan()
    assert sorted(names.values()) == sorted(set(ips))
    assert all(is_generated_name("edge", n) for n in names)
    assert by_operator.spec.node_names_generated
    # the one difference: the webhook also drops duplicate addresses from the list
    assert by_webhook.spec.target_machines == list(dict.fromkeys(ips))
    assert by_operator.spec.target_machines == ips


def test_both_paths_avoid_existing_nodes_the_same_way() -> None:
    obj = add_task(["10.0.0.1", "10.0.0.2"])
    first = webhook_path(obj, 7, set()).spec.plan()
    taken = set(list(first)[:1])  # the first name drawn is a Node already
    by_webhook, by_operator = webhook_path(obj, 7, taken), operator_path(obj, 7, taken)
    assert the_plan(by_webhook) == the_plan(by_operator)
    assert not taken & set(by_operator.spec.plan())


def test_object_names_derive_from_the_uid() -> None:
    task = NodeTask.from_dict(add_task(["10.0.0.1"]))
    plan = asyncio.run(decide_plan("nodes", task.spec, random.Random(1), exist(set())))
    label = plan.labels[NODE_LABEL]
    assert label.startswith("nodes-")
    assert plan.annotations == {}  # no uid yet (the webhook, on create): none, and
    assert plan.dropped == (JOB_NAME_ANNOTATION, CONFIGMAP_NAME_ANNOTATION)  # copies go
    again = asyncio.run(
        decide_plan("nodes", task.spec, random.Random(2), exist(set()), label=label, uid="u-9")
    )
    assert again.labels == plan.labels
    assert again.annotations == {
        JOB_NAME_ANNOTATION: "nodetask-u-9",
        CONFIGMAP_NAME_ANNOTATION: "nodetask-u-9",
    }


def test_the_operator_keeps_what_the_task_has_and_never_renames() -> None:
    obj = add_task(
        ["10.0.0.1"],
        labels={NODE_LABEL: "nodes-abc123"},
        annotations={JOB_NAME_ANNOTATION: "nodes-job"},
    )
    task = NodeTask.from_dict(obj)
    patch = asyncio.run(plan_missing(task, random.Random(1), exist(set()))).patch()
    assert "labels" not in patch["metadata"]
    assert set(patch["metadata"]["annotations"]) == {CONFIGMAP_NAME_ANNOTATION}
    assert set(patch["spec"]) == {"nodeNamesOverride", "nodeNamesGenerated"}
    planned = NodeTask.from_dict(merged(obj, patch))
    assert not needs_plan(planned)
    again = asyncio.run(plan_missing(planned, random.Random(2), exist(set())))
    assert again.patch() == {}  # planned once: nothing more to write


def test_a_reinstall_task_gets_only_label_and_object_names() -> None:
    obj = add_task([])
    obj["spec"] = {"sshCredential": "login", "nodeNamesOverride": {"gw-1": "10.0.0.9"}}
    task = NodeTask.from_dict(obj)
    patch = asyncio.run(plan_missing(task, random.Random(1), exist(set()))).patch()
    assert "spec" not in patch
    assert set(patch["metadata"]) == {"labels", "annotations"}


@pytest.mark.parametrize(
    "change",
    [
        {"sshPort": 2222},
        {"targetMachines": ["10.0.0.1"]},
        {"nodeNamePrefix": "other"},
        {"proxyNode": "p-2"},
    ],
)
def test_only_the_names_may_be_written_after_create(change: dict[str, Any]) -> None:
    obj = add_task(["10.0.0.1", "10.0.0.1", "10.0.0.2"])
    task = NodeTask.from_dict(obj)
    plan = asyncio.run(plan_missing(task, random.Random(1), exist(set())))
    after = merged(obj, plan.patch())
    assert records_names_once(obj["spec"], after["spec"])
    names = after["spec"]["nodeNamesOverride"]
    if "nodeNamePrefix" in change:
        names = {n.replace("edge-", "other-"): ip for n, ip in names.items()}
    worse = {**after, "spec": {**after["spec"], **change, "nodeNamesOverride": names}}
    assert not records_names_once(obj["spec"], worse["spec"])
    assert validate_update(obj, worse)[0].startswith("spec: is immutable")
    assert not records_names_once(after["spec"], after["spec"])  # no second time
