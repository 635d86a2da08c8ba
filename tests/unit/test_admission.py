"""penetrator.plan.admission: the webhook's pure decisions, with hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    NodeTaskSpec,
    check_label_value,
    is_generated_name,
)
from penetrator.plan.admission import (
    CreateFacts,
    Denied,
    RecentAdmissions,
    credential_problems,
    mutate_create,
    task_base_name,
    validate_create,
    validate_update,
)
from penetrator.plan.prepare import free_node_names

GOOD_KEYS = {"passwd": 8}


def task(spec: dict[str, Any], name: str = "t1", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **meta}, "spec": {"sshCredential": "login", **spec}}


def add(ips: list[str], **kw: Any) -> dict[str, Any]:
    return task({"nodeNamePrefix": "edge", "targetMachines": ips}, **kw)


def none_exist() -> Any:
    async def f(names: list[str]) -> set[str]:
        return set()

    return f


def mutate(obj: dict[str, Any], exist: Any = None, seed: int = 1) -> dict[str, Any]:
    m = asyncio.run(mutate_create(obj, exist or none_exist(), random.Random(seed)))
    return m.patch()


def merged(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = {**obj, "spec": {**obj["spec"], **patch.get("spec", {})}}
    meta = dict(obj["metadata"])
    for part in ("labels", "annotations"):
        if part in patch.get("metadata", {}):
            both = {**meta.get(part, {}), **patch["metadata"][part]}
            meta[part] = {k: v for k, v in both.items() if v is not None}  # a merge patch
    out["metadata"] = meta
    return out


def facts(
    keys: dict[str, int] | None = None, proxy: bool | None = None, tasks: Any = None
) -> CreateFacts:
    return CreateFacts(GOOD_KEYS if keys is None else keys, proxy, tasks or {})


def one(problems: Iterable[str]) -> str:
    problems = list(problems)
    assert len(problems) == 1, problems
    return problems[0]


# --- mutate ------------------------------------------------------------------------


def test_add_task_gets_unique_generated_names_label_and_annotations() -> None:
    obj = add(["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"])
    patch = mutate(obj)
    spec = patch["spec"]
    assert spec["targetMachines"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # duplicates removed
    names = spec["nodeNamesOverride"]
    assert sorted(names.values()) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert len(set(names)) == 3
    assert all(is_generated_name("edge", n) for n in names)
    assert spec["nodeNamesGenerated"] is True
    label = patch["metadata"]["labels"][NODE_LABEL]
    assert label.startswith("t1-")
    assert check_label_value(label) is None
    # the object names come from the uid, which the API server gives after this
    # webhook: the operator writes them; a new task's copies are removed
    ann = patch["metadata"]["annotations"]
    assert ann == {JOB_NAME_ANNOTATION: None, CONFIGMAP_NAME_ANNOTATION: None}
    # the stored object is acceptable to the model (the CRD's rules say the same)
    stored = NodeTaskSpec.model_validate(merged(obj, patch)["spec"])
    assert stored.plan() == names
    assert not stored.needs_names


def test_names_without_duplicates_keep_target_list() -> None:
    patch = mutate(add(["10.0.0.1", "10.0.0.2"]))
    assert "targetMachines" not in patch["spec"]


def test_ipv6_spellings_are_one_machine() -> None:
    patch = mutate(add(["fd00::1", "fd00:0::1", "FD00::1"]))
    assert list(patch["spec"]["nodeNamesOverride"].values()) == ["fd00::1"]
    assert patch["spec"]["targetMachines"] == ["fd00::1"]


def test_generated_names_avoid_existing_nodes() -> None:
    seen: list[list[str]] = []
    existing: set[str] = set()

    async def exist(names: list[str]) -> set[str]:
        seen.append(list(names))
        if len(seen) == 1:  # every first name is taken
            existing.update(names)
        return {n for n in names if n in existing}

    patch = mutate(add(["10.0.0.1", "10.0.0.2"]), exist)
    names = patch["spec"]["nodeNamesOverride"]
    assert not set(names) & existing
    assert len(seen) == 2
    assert len(seen[1]) == 2


def test_one_colliding_name_only_is_drawn_again() -> None:
    calls: list[list[str]] = []

    async def exist(names: list[str]) -> set[str]:
        calls.append(names)
        return {names[0]} if len(calls) == 1 else set()

    patch = mutate(add(["10.0.0.1", "10.0.0.2", "10.0.0.3"]), exist)
    assert len(calls) == 2
    assert len(calls[1]) == 3
    assert calls[0][0] not in patch["spec"]["nodeNamesOverride"]
    assert set(calls[0][1:]) <= set(patch["spec"]["nodeNamesOverride"])


def test_always_colliding_names_are_refused() -> None:
    async def exist(names: list[str]) -> set[str]:
        return set(names)

    with pytest.raises(Denied, match="nodeNamePrefix"):
        mutate(add(["10.0.0.1"]), exist)


def test_free_node_names_distinct_for_many() -> None:
    ips = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(2000)]
    names = asyncio.run(free_node_names("e", ips, none_exist(), random.Random(3)))
    assert len(names) == 2000
    assert sorted(names.values()) == sorted(ips)


def test_reinstall_task_keeps_its_names_and_gets_label() -> None:
    obj = task({"nodeNamesOverride": {"edge-a": "10.0.0.1", "other": "10.0.0.2"}})
    patch = mutate(obj)
    assert "spec" not in patch
    assert NODE_LABEL in patch["metadata"]["labels"]


def test_copied_label_and_annotations_are_replaced() -> None:
    obj = add(
        ["10.0.0.1"],
        labels={NODE_LABEL: "old-task-abcdef"},
        annotations={JOB_NAME_ANNOTATION: "someone-elses-job"},
    )
    patch = mutate(obj)
    assert patch["metadata"]["labels"][NODE_LABEL] != "old-task-abcdef"
    assert patch["metadata"]["annotations"][JOB_NAME_ANNOTATION] is None  # removed


def test_label_differs_per_task_of_same_name() -> None:
    a = mutate(add(["10.0.0.1"]), seed=1)["metadata"]
    b = mutate(add(["10.0.0.1"]), seed=2)["metadata"]
    assert a["labels"] != b["labels"]


def test_generate_name_uses_the_stem() -> None:
    obj = add(["10.0.0.1"])
    obj["metadata"] = {"generateName": "nodes-"}
    patch = mutate(obj)
    assert patch["metadata"]["labels"][NODE_LABEL].startswith("nodes-")
    assert task_base_name({"metadata": {"generateName": "-"}}) == ""
    assert task_base_name({"metadata": {"generateName": "BAD NAME"}}) == ""
    assert task_base_name({}) == ""


def test_long_task_name_label_fits() -> None:
    patch = mutate(add(["10.0.0.1"], name="a" * 253))
    label = patch["metadata"]["labels"][NODE_LABEL]
    assert check_label_value(label) is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            {
                "nodeNamePrefix": "e",
                "targetMachines": ["10.0.0.1"],
                "nodeNamesOverride": {"a": "10.0.0.2"},
            },
            "only one of",
        ),
        (
            {
                "nodeNamePrefix": "e",
                "targetMachines": ["10.0.0.1"],
                "nodeNamesOverride": {"e-abcdef": "10.0.0.1"},
                "nodeNamesGenerated": True,
            },
            "nodeNamesGenerated",
        ),
        (
            {"nodeNamesOverride": {"a": "10.0.0.1", "b": "10.0.0.1"}},
            "nodeNamesOverride: 10.0.0.1 is given to both",
        ),
        ({"nodeNamesOverride": {"a": "10.0.0.1", "b": "10.0.00.1"}}, "nodeNamesOverride"),
        ({"nodeNamesOverride": {"fd00::1": "fd00::1", "x": "fd00:0::1"}}, "given to both"),
        ({"nodeNamesOverride": {"Bad_Name": "10.0.0.1"}}, "nodeNamesOverride: name"),
        ({"nodeNamePrefix": "e", "targetMachines": ["10.0.0.256"]}, "targetMachines: [0]"),
        ({"nodeNamePrefix": "e", "targetMachines": ["::ffff:10.0.0.1"]}, "IPv4-mapped"),
        ({"nodeNamePrefix": "e", "targetMachines": ["10.0.0.1%eth0"]}, "targetMachines"),
        ({"nodeNamePrefix": "e", "targetMachines": []}, "targetMachines: the list is empty"),
        ({"nodeNamePrefix": "E!", "targetMachines": ["10.0.0.1"]}, "nodeNamePrefix"),
        ({"targetMachines": ["10.0.0.1"]}, "nodeNamePrefix is required"),
        ({}, "give spec.targetMachines"),
        ({"nodeNamePrefix": "e", "targetMachines": "10.0.0.1"}, "targetMachines"),
        ({"nodeNamePrefix": "e", "targetMachines": [1, 2]}, "targetMachines"),
        ({"nodeNamesOverride": ["a"]}, "nodeNamesOverride"),
        ({"nodeNamePrefix": "e", "targetMachines": ["10.0.0.1"], "sshPort": 0}, "sshPort"),
        ({"nodeNamePrefix": "e", "targetMachines": ["10.0.0.1"], "sshPort": "22"}, "sshPort"),
        ({"nodeNamePrefix": "e", "targetMachines": ["10.0.0.1"], "proxyNode": "A B"}, "proxyNode"),
        (
            {"nodeNamePrefix": "e", "targetMachines": ["10.0.0.1"], "sshCredential": "../x"},
            "sshCredential",
        ),
    ],
)
def test_bad_user_input_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(Denied) as e:
        mutate(task(spec))
    assert field in str(e.value)


@pytest.mark.parametrize("spec", [None, [], "x", 5, {"sshCredential": None}])
def test_spec_of_wrong_shape_is_refused(spec: Any) -> None:
    with pytest.raises(Denied, match="spec"):
        mutate({"metadata": {"name": "t"}, "spec": spec})


def test_many_problems_are_counted_not_flooded() -> None:
    ips = [f"10.0.0.{i}x" for i in range(200)]
    with pytest.raises(Denied) as e:
        mutate(add(ips))
    assert len(str(e.value)) < 2000
    assert "more" in str(e.value)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.text(max_size=5))),
        max_size=6,
    )
)
def test_hostile_specs_never_crash(spec: dict[str, Any]) -> None:
    obj = {"metadata": {"name": "t"}, "spec": spec}
    with contextlib.suppress(Denied):
        mutate(obj)
    validate_create(obj, facts())


# --- validate CREATE -----------------------------------------------------------------


def stored_add(ips: list[str], name: str = "t1") -> dict[str, Any]:
    """As stored and then planned by the operator (annotations from the uid)."""
    obj = add(ips, name=name)
    stored = merged(obj, mutate(obj))
    stored["metadata"]["uid"] = "u-1"
    stored["metadata"]["annotations"] = {
        JOB_NAME_ANNOTATION: "nodetask-u-1",
        CONFIGMAP_NAME_ANNOTATION: "nodetask-u-1",
    }
    return stored


def test_good_task_passes() -> None:
    assert validate_create(stored_add(["10.0.0.1"]), facts(proxy=True)) == []


def test_missing_secret() -> None:
    msg = one(validate_create(stored_add(["10.0.0.1"]), CreateFacts(None, None, {})))
    assert msg.startswith("spec.sshCredential: Secret edge-system/login does not exist")
    assert "penetrator credential create login" in msg


@pytest.mark.parametrize(
    ("keys", "text"),
    [
        ({}, "neither key passwd"),
        ({"password": 3, "id_rsa": 4}, "it has: id_rsa, password"),
        ({"passwd": 3, "sshkey": 4}, "both keys"),
        ({"passwd": 0}, "key passwd of Secret edge-system/login is empty"),
        ({"sshkey": 0}, "private key"),
    ],
)
def test_unusable_secret(keys: dict[str, int], text: str) -> None:
    msg = one(credential_problems("login", keys))
    assert msg.startswith("spec.sshCredential:")
    assert text in msg


def test_key_secret_is_fine() -> None:
    assert credential_problems("login", {"sshkey": 400, "other": 1}) == []


def test_unknown_proxy_node() -> None:
    obj = stored_add(["10.0.0.1"])
    obj["spec"]["proxyNode"] = "nope"
    msg = one(validate_create(obj, facts(proxy=False)))
    assert msg.startswith("spec.proxyNode: there is no Node 'nope'")


def test_direct_mode_needs_no_proxy() -> None:
    assert validate_create(stored_add(["10.0.0.1"]), facts(proxy=None)) == []


def other(
    name: str, plan: dict[str, str] | None = None, targets: list[str] | None = None,
    status: dict[str, Any] | None = None, **meta: Any,
) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"sshCredential": "x"}
    if plan is not None:
        spec["nodeNamesOverride"] = plan
    if targets is not None:
        spec["targetMachines"] = targets
        spec["nodeNamePrefix"] = "edge"
    return {"metadata": {"name": name, **meta}, "spec": spec, "status": status or {}}


def test_machine_of_an_unfinished_task_is_refused_naming_it() -> None:
    tasks = {
        "first": other("first", {"edge-aaaaaa": "10.0.0.2"}, status={"nodetaskStatus": "creating"})
    }
    msg = one(validate_create(stored_add(["10.0.0.1", "10.0.0.2"]), facts(tasks=tasks)))
    assert msg.startswith(
        "spec.targetMachines: machine 10.0.0.2 is being installed by NodeTask 'first' (creating)"
    )


def test_finished_tasks_do_not_block() -> None:
    tasks = {
        "done": other("done", {"a": "10.0.0.1"}, status={"nodetaskStatus": "ready"}),
        "gaveup": other("gaveup", {"b": "10.0.0.1"}, status={"nodetaskStatus": "failed"}),
    }
    assert validate_create(stored_add(["10.0.0.1"]), facts(tasks=tasks)) == []


def test_only_pending_machines_of_a_running_task_block() -> None:
    body = other(
        "first", {"a": "10.0.0.1", "b": "10.0.0.2"},
        status={"nodetaskStatus": "creating", "nodeStatus": {"b": "10.0.0.2"}},
    )  # fmt: skip
    assert validate_create(stored_add(["10.0.0.1"]), facts(tasks={"first": body})) == []
    assert validate_create(stored_add(["10.0.0.2"]), facts(tasks={"first": body}))


def test_task_without_webhook_names_blocks_by_targets_and_ipv6_spelling() -> None:
    body = other("old", targets=["fd00:0:0::5"])
    msg = one(validate_create(stored_add(["fd00::5"]), facts(tasks={"old": body})))
    assert "'old' (not started)" in msg


def test_reinstall_conflicts_name_field_and_node_name() -> None:
    tasks = {"first": other("first", {"edge-1": "10.0.0.9"}, status={"nodetaskStatus": "creating"})}
    obj = task({"nodeNamesOverride": {"edge-1": "10.0.0.1"}})
    msg = one(validate_create(obj, facts(tasks=tasks)))
    assert msg.startswith(
        "spec.nodeNamesOverride: node name edge-1 is being installed by NodeTask 'first'"
    )


def test_deleting_task_still_blocks() -> None:
    body = other("gone", {"a": "10.0.0.1"}, deletionTimestamp="2026-01-01T00:00:00Z")
    msg = one(validate_create(stored_add(["10.0.0.1"]), facts(tasks={"gone": body})))
    assert "being deleted" in msg


def test_many_conflicts_are_summarised() -> None:
    ips = [f"10.0.1.{i}" for i in range(1, 40)]
    body = other("big", targets=ips)
    msg = one(validate_create(stored_add(ips), facts(tasks={"big": body})))
    assert "and 34 more" in msg


def test_own_task_is_not_a_conflict() -> None:
    obj = stored_add(["10.0.0.1"])
    assert validate_create(obj, facts(tasks={"t1": obj})) == []


def test_hostile_other_tasks_are_skipped() -> None:
    """Bodies that are no NodeTask (the API server stores none) hold nothing."""
    tasks: dict[str, Any] = {
        "a": {"metadata": None, "spec": "x", "status": 5},
        "b": {"spec": {"nodeNamesOverride": {"x": 5, "y": "not-an-ip"}, "targetMachines": "1"}},
        "c": {"spec": {"nodeNamesOverride": None, "targetMachines": [None, "10.0.0.1"]}},
        "d": other("d", targets=["10.0.0.1"]),
    }
    problems = validate_create(stored_add(["10.0.0.1"]), facts(tasks=tasks))
    assert len(problems) == 1
    assert "'d'" in problems[0]


def test_all_problems_reported_together() -> None:
    obj = stored_add(["10.0.0.1"])
    obj["spec"]["proxyNode"] = "nope"
    tasks = {"x": other("x", {"a": "10.0.0.1"})}
    problems = validate_create(obj, CreateFacts(None, False, tasks))
    assert [p.split(":")[0] for p in problems] == [
        "spec.sshCredential", "spec.proxyNode", "spec.targetMachines",
    ]  # fmt: skip
    assert str(Denied(problems)).count("; ") >= 2


# --- validate UPDATE -----------------------------------------------------------------


def test_spec_change_is_refused() -> None:
    old = stored_add(["10.0.0.1"])
    new = {**old, "spec": {**old["spec"], "sshPort": 2222}}
    assert one(validate_update(old, new)).startswith("spec: is immutable")


def test_metadata_changes_allowed_but_set_once_values_kept() -> None:
    old = stored_add(["10.0.0.1"])
    new = {**old, "metadata": {**old["metadata"], "finalizers": ["x"]}}
    assert validate_update(old, new) == []
    changed = {**old, "metadata": {**old["metadata"], "labels": {NODE_LABEL: "t1-zzzzzz"}}}
    assert one(validate_update(old, changed)).startswith(f"metadata.labels[{NODE_LABEL}]")
    dropped = {**old, "metadata": {**old["metadata"], "annotations": {}}}
    assert len(validate_update(old, dropped)) == 2


def test_first_setting_of_label_is_allowed() -> None:
    """Without the webhook the operator sets label and annotations on its first look."""
    old = add(["10.0.0.1"])
    new = merged(old, {"metadata": {"labels": {NODE_LABEL: "t1-abcdef"}}})
    assert validate_update(old, new) == []


def test_update_with_hostile_metadata() -> None:
    assert validate_update({"metadata": "x"}, {"metadata": None}) == []


# --- recent admissions -----------------------------------------------------------------


def test_recent_admission_blocks_a_concurrent_task_until_listed() -> None:
    recent = RecentAdmissions(settle=1)
    first = stored_add(["10.0.0.1"], name="first")
    recent.record(first, now=100.0)
    # a second task at the same moment: the list does not show "first" yet
    tasks = recent.with_listed({}, list_started=100.1)
    msg = one(validate_create(stored_add(["10.0.0.1"], name="second"), facts(tasks=tasks)))
    assert "NodeTask 'first'" in msg
    # once a list shows it, the list decides (here: it is ready)
    listed = {"first": {**first, "status": {"nodetaskStatus": "ready"}}}
    tasks = recent.with_listed(listed, list_started=100.2)
    assert validate_create(stored_add(["10.0.0.1"]), facts(tasks=tasks)) == []
    assert recent.entries == {}


def test_recent_admission_not_listed_after_settling_is_gone() -> None:
    """Created and deleted before any list saw it: no phantom claim."""
    recent = RecentAdmissions(settle=1)
    recent.record(stored_add(["10.0.0.1"], name="gone"), now=100.0)
    assert "gone" in recent.with_listed({}, list_started=100.5)
    assert recent.with_listed({}, list_started=101.5) == {}
    recent.record({"metadata": {"generateName": "x-"}, "spec": {}}, now=100.0)
    assert recent.entries == {}
