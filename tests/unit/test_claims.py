"""plan.claims: which machines an unfinished task holds, and which of them an
older task holds for a newer one (one answer for the operator and the webhook)."""

from __future__ import annotations

from typing import Any

from penetrator.api import NodeTask
from penetrator.plan.claims import held_machines, is_unfinished, older_claims, parse_tasks


def nt(
    name: str,
    created: str | None = "2026-01-01T00:00:00Z",
    *,
    plan: dict[str, str] | None = None,
    targets: list[str] | None = None,
    status: dict[str, Any] | None = None,
) -> NodeTask:
    spec: dict[str, Any] = {"sshCredential": "login"}
    if plan is not None:
        spec["nodeNamesOverride"] = plan
    if targets is not None:
        spec |= {"targetMachines": targets, "nodeNamePrefix": "edge"}
    if plan is not None and targets is not None:
        spec["nodeNamesGenerated"] = True
    meta: dict[str, Any] = {"name": name}
    if created is not None:
        meta["creationTimestamp"] = created
    return NodeTask.from_dict({"metadata": meta, "spec": spec, "status": status or {}})


def test_a_new_task_holds_its_whole_plan_named_or_not() -> None:
    assert held_machines(nt("a", plan={"n1": "10.0.0.1"})) == {"10.0.0.1": "n1"}
    assert held_machines(nt("a", targets=["fd00:0::5", "10.0.0.2", "fd00::5"])) == {
        "fd00::5": None,
        "10.0.0.2": None,
    }
    named = nt("a", plan={"edge-abc123": "10.0.0.1"}, targets=["10.0.0.1"])
    assert held_machines(named) == {"10.0.0.1": "edge-abc123"}


def test_once_planned_in_status_only_the_machines_not_installed_are_held() -> None:
    plan = {"n1": "10.0.0.1", "n2": "10.0.0.2"}
    running = {"nodetaskStatus": "creating", "planned": 2, "nodeStatus": {"n2": "10.0.0.2"}}
    assert held_machines(nt("a", plan=plan, status=running)) == {"10.0.0.2": "n2"}
    all_in = {"nodetaskStatus": "creating", "planned": 2, "nodeStatus": {}}
    assert held_machines(nt("a", plan=plan, status=all_in)) == {}
    # waiting for preparation: a status without the plan in it yet
    waiting = {"nodetaskStatus": "creating"}
    assert held_machines(nt("a", plan=plan, status=waiting)) == {
        "10.0.0.1": "n1",
        "10.0.0.2": "n2",
    }


def test_a_ready_or_failed_task_holds_nothing() -> None:
    for phase in ("ready", "failed"):
        task = nt("a", plan={"n1": "10.0.0.1"}, status={"nodetaskStatus": phase})
        assert not is_unfinished(task)
        assert held_machines(task) == {}
    assert is_unfinished(nt("a", plan={"n1": "10.0.0.1"}))


def test_older_unfinished_tasks_hold_machines_for_newer_ones() -> None:
    old = nt("old", "2026-01-01T00:00:00Z", plan={"a": "10.0.0.1", "b": "10.0.0.2"})
    new = nt("new", "2026-01-02T00:00:00Z", plan={"c": "10.0.0.1"})
    oldest = nt("oldest", "2025-01-01T00:00:00Z", plan={"d": "10.0.0.2"})
    done = nt(
        "done", "2024-01-01T00:00:00Z", plan={"e": "10.0.0.3"}, status={"nodetaskStatus": "ready"}
    )
    tasks = [new, old, oldest, done]
    assert older_claims(tasks, new) == {"10.0.0.2": "oldest", "10.0.0.1": "old"}
    assert older_claims(tasks, old) == {"10.0.0.2": "oldest"}
    assert older_claims(tasks, oldest) == {}


def test_same_creation_time_is_ordered_by_name_and_no_time_is_oldest() -> None:
    a, b = nt("a", plan={"x": "10.0.0.1"}), nt("b", plan={"y": "10.0.0.1"})
    assert older_claims([a, b], b) == {"10.0.0.1": "a"}
    assert older_claims([a, b], a) == {}
    unsaved = nt("z", None, plan={"w": "10.0.0.1"})
    assert older_claims([a, unsaved], a) == {"10.0.0.1": "z"}


def test_parse_tasks_leaves_out_what_is_no_nodetask() -> None:
    good = nt("good", plan={"n": "10.0.0.1"}).to_dict()
    bodies: dict[str, Any] = {"good": good, "bad": {"spec": "x"}, "none": {}}
    assert list(parse_tasks(bodies)) == ["good"]
