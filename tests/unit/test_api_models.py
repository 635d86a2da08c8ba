"""penetrator.api: parsing, validation messages and views of the NodeTask model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    MAX_MACHINES,
    MAX_PREFIX_LENGTH,
    NODE_LABEL,
    Condition,
    MachinePhase,
    MachineStatus,
    NodeTask,
    NodeTaskSpec,
    NodeTaskStatus,
    TaskPhase,
    canonical_ip,
    check_ip,
    is_generated_name,
    truncate_error,
    user_spec_problems,
    validation_messages,
)
from support import REPO, nodetask

EXAMPLES = REPO / "deploy" / "examples"


def task(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return nodetask("nodes", metadata=meta, **spec)


def add_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeNamePrefix": "edge",
        "targetMachines": ["172.21.3.194", "172.21.3.195"],
        "sshCredential": "login-secret",
        "proxyNode": "vm-2-117-centos",
    }
    spec.update(over)
    return {k: v for k, v in spec.items() if v is not None}


def messages(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        NodeTask.from_dict(data)
    return "\n".join(validation_messages(info.value))


# --- the seed's examples ---------------------------------------------------------


def test_add_example_parses_with_defaults() -> None:
    data = yaml.safe_load((EXAMPLES / "nodetask-add.yaml").read_text())
    nt = NodeTask.from_dict(data)
    assert nt.name == "nodes"
    assert nt.spec.node_name_prefix == "edge"
    assert nt.spec.target_machines == ["172.21.3.194", "172.21.3.195"]
    assert nt.spec.ssh_port == 22
    assert nt.spec.needs_names
    assert not nt.spec.is_reinstall
    assert not nt.spec.direct
    assert nt.spec.plan() == {}
    assert nt.status == NodeTaskStatus()


def test_reinstall_example_parses() -> None:
    data = yaml.safe_load((EXAMPLES / "nodetask-reinstall.yaml").read_text())
    nt = NodeTask.from_dict(data)
    assert nt.spec.is_reinstall
    assert not nt.spec.needs_names
    assert nt.spec.plan() == {"edge-1mokvl": "172.21.3.194"}


def test_round_trip_is_camel_case_and_stable() -> None:
    data = task(add_spec(sshPort=2222), uid="u-1", generation=3, labels={NODE_LABEL: "nodes-x1"})
    nt = NodeTask.from_dict(data)
    out = nt.to_dict()
    assert out["spec"] == {**add_spec(), "sshPort": 2222}
    assert out["metadata"]["uid"] == "u-1"
    assert NodeTask.from_dict(out) == nt
    assert nt.task_label == "nodes-x1"


def test_join_template_is_an_optional_extension() -> None:
    assert NodeTask.from_dict(task(add_spec())).spec.join_template is None
    nt = NodeTask.from_dict(task(add_spec(joinTemplate="kubeadm")))
    assert nt.spec.join_template == "kubeadm"
    assert nt.to_dict()["spec"]["joinTemplate"] == "kubeadm"


def test_snake_case_names_construct_too() -> None:
    spec = NodeTaskSpec(node_names_override={"a": "fd00::1"}, ssh_credential="s", ssh_port=2200)
    assert spec.to_dict() == {
        "nodeNamesOverride": {"a": "fd00::1"},
        "sshCredential": "s",
        "sshPort": 2200,
    }
    assert spec.direct


def test_annotations_and_server_fields() -> None:
    data = task(
        add_spec(),
        annotations={JOB_NAME_ANNOTATION: "job-1", CONFIGMAP_NAME_ANNOTATION: "cm-1"},
        labels=None,
        resourceVersion="42",
        managedFields=[{"manager": "kubectl"}],
        creationTimestamp="2026-01-01T00:00:00Z",
    )
    data["status"] = None
    nt = NodeTask.from_dict(data)
    # the names of the objects come from the uid, never from the annotations
    assert (nt.job_name, nt.configmap_name) == (None, None)
    assert nt.names_recorded
    uid = NodeTask.from_dict({**data, "metadata": {**data["metadata"], "uid": "u-7"}})
    assert (uid.job_name, uid.configmap_name) == ("nodetask-u-7", "nodetask-u-7")
    assert nt.metadata.resource_version == "42"
    assert nt.task_label is None


def test_unique_machines_keeps_order_and_canonicalises() -> None:
    spec = NodeTaskSpec.model_validate(
        add_spec(targetMachines=["10.0.0.2", "fd00:0::1", "10.0.0.1", "10.0.0.2", "FD00::1"])
    )
    assert spec.unique_machines() == ["10.0.0.2", "fd00::1", "10.0.0.1"]


# --- rejections: the field named, the fix said ------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (add_spec(targetMachines=["172.21.3"]), "spec.targetMachines: [0] '172.21.3'"),
        (add_spec(targetMachines=["256.1.1.1"]), "spec.targetMachines: [0] '256.1.1.1'"),
        (add_spec(targetMachines=["10.0.0.1", "1.2.3.4;rm -rf /"]), "[1] '1.2.3.4;rm -rf /'"),
        (add_spec(targetMachines=["010.1.1.1"]), "spec.targetMachines"),
        (add_spec(targetMachines=["fe80::1%eth0"]), "only hex digits"),
        (add_spec(targetMachines=["::ffff:1.2.3.4"]), "write the IPv4 address 1.2.3.4"),
        (add_spec(targetMachines=[]), "spec.targetMachines: the list is empty"),
        (add_spec(targetMachines=None), "give spec.targetMachines"),
        (
            add_spec(nodeNamesOverride={"edge-1mokvl": "172.21.3.194"}),
            "give only one of spec.targetMachines",
        ),
        (
            add_spec(nodeNamePrefix="Edge_1"),
            "spec.nodeNamePrefix: 'Edge_1' is not a DNS-1123 label",
        ),
        (add_spec(nodeNamePrefix="e" * (MAX_PREFIX_LENGTH + 1)), "use at most 56"),
        (add_spec(nodeNamePrefix=None), "spec.nodeNamePrefix is required with spec.targetMachines"),
        (add_spec(sshPort=0), "spec.sshPort: 0 is out of range; use 1-65535"),
        (add_spec(sshPort=70000), "spec.sshPort: 70000 is out of range"),
        (add_spec(sshPort="22"), "spec.sshPort"),
        (add_spec(sshCredential=""), "spec.sshCredential: must not be empty; name the Secret"),
        (add_spec(sshCredential=None), "spec.sshCredential: Field required"),
        (add_spec(proxyNode="Bad_Node"), "spec.proxyNode: 'Bad_Node' is not a DNS-1123 subdomain"),
        (
            add_spec(targetMachines=None, nodeNamesOverride={}),
            "spec.nodeNamesOverride: the map is empty",
        ),
        (
            add_spec(targetMachines=None, nodeNamesOverride={"Node_A": "10.0.0.1"}),
            "spec.nodeNamesOverride: name 'Node_A' is not a DNS-1123 subdomain",
        ),
        (
            add_spec(targetMachines=None, nodeNamesOverride={"a" * 64: "10.0.0.1"}),
            "use at most 63",
        ),
        (
            add_spec(targetMachines=None, nodeNamesOverride={"a": "10.0.0.1", "b": "10.0.0.1"}),
            "10.0.0.1 is given to both 'a' and 'b'",
        ),
        (
            add_spec(targetMachines=None, nodeNamesOverride={"a": "fd00::1", "b": "fd00:0::1"}),
            "is given to both 'a' and 'b'",
        ),
        (
            add_spec(targetMachines=None, nodeNamesOverride={"a": "10.0.0.300"}),
            "spec.nodeNamesOverride: [a] '10.0.0.300'",
        ),
        (add_spec(targetMachines=["10.0.0.1"] * (MAX_MACHINES + 1)), "at most 5000 per task"),
        (add_spec(joinTemplate="ansible"), "spec.joinTemplate: Input should be 'edgeadm'"),
    ],
)
def test_invalid_spec_names_field_and_fix(spec: dict[str, Any], expected: str) -> None:
    assert expected in messages(task(spec))


def test_many_bad_addresses_are_summarised() -> None:
    text = messages(task(add_spec(targetMachines=[f"10.0.0.{300 + i}" for i in range(20)])))
    assert "[4] '10.0.0.304'" in text
    assert "[5]" not in text
    assert "and 15 more" in text


def test_bad_task_name() -> None:
    data = task(add_spec())
    data["metadata"]["name"] = "Nodes"
    assert "metadata.name: 'Nodes' is not a DNS-1123 subdomain" in messages(data)


def test_hostile_value_is_quoted_and_cut() -> None:
    text = messages(task(add_spec(targetMachines=["x" * 10_000])))
    assert len(text) < 400


# --- the webhook shape: both lists, names generated from the prefix ---------------


def test_planned_shape_is_accepted() -> None:
    user = NodeTaskSpec.model_validate(
        add_spec(targetMachines=["172.21.3.194", "172.21.3.195", "172.21.3.194"])
    )
    assert user.needs_names
    spec = user.with_generated_names({"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"})
    assert spec.node_names_generated is True
    assert spec.to_dict()["nodeNamesGenerated"] is True
    assert user_spec_problems(spec) == [
        "spec.nodeNamesGenerated is set by the admission webhook only, together with "
        "the names it generates; leave it out"
    ]
    assert not spec.needs_names
    assert not spec.is_reinstall
    assert spec.plan() == {"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"}
    assert NodeTaskSpec.model_validate(spec.to_dict()) == spec


def test_user_giving_both_is_told_so() -> None:
    spec = NodeTaskSpec.model_construct(
        target_machines=["10.0.0.1"], node_names_override={"a": "10.0.0.1"}
    )
    assert user_spec_problems(spec) == [
        "spec: give only one of spec.targetMachines (add machines under generated names) "
        "and spec.nodeNamesOverride (reinstall under these names), not both"
    ]


@pytest.mark.parametrize(
    ("override", "generated"),
    [
        ({"edge-ab12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"}, None),  # no mark
        ({"edge-ab12cd": "172.21.3.194"}, True),  # 172.21.3.195 has no name
        ({"edge-ab12cd": "172.21.3.194", "edge-ab12ce": "172.21.3.196"}, True),  # foreign IP
        ({"edge-ab12cd": "172.21.3.194", "other-zz99aa": "172.21.3.195"}, True),  # prefix
        ({"edge-AB12cd": "172.21.3.194", "edge-zz99aa": "172.21.3.195"}, True),  # not generated
    ],
)
def test_both_lists_otherwise_rejected(override: dict[str, str], generated: bool | None) -> None:
    text = messages(task(add_spec(nodeNamesOverride=override, nodeNamesGenerated=generated)))
    assert "give only one of spec.targetMachines" in text or "nodeNamesOverride" in text


def test_generated_mark_alone_is_rejected() -> None:
    text = messages(task(add_spec(nodeNamesGenerated=True)))
    assert "spec.nodeNamesGenerated is set by the admission webhook only" in text


def test_user_spec_problems_empty_for_one_list() -> None:
    assert user_spec_problems(NodeTaskSpec.model_validate(add_spec())) == []


def test_is_generated_name() -> None:
    assert is_generated_name("edge", "edge-1mokvl")
    assert is_generated_name("edge-bj", "edge-bj-000000")
    assert not is_generated_name("edge", "edge-1mokv")
    assert not is_generated_name("edge", "edge-1mokvL")
    assert not is_generated_name("edge", "edgex-1mokvl")
    assert not is_generated_name("edge", "1mokvl")


# --- addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip", ["172.21.3.194", "0.0.0.0", "255.255.255.255", "fd00::1", "::1", "1:2:3:4:5:6:7:8"]
)
def test_good_ips(ip: str) -> None:
    assert check_ip(ip) is None


@pytest.mark.parametrize(
    "ip",
    [
        "",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.4/32",
        "01.2.3.4",
        "fd00::1::2",
        "::ffff:10.0.0.1",
        "1.2.3.4;id",
        "$(id)",
        "1.2.3.4\n",
    ],
)
def test_bad_ips(ip: str) -> None:
    assert check_ip(ip) is not None


def test_canonical_ip() -> None:
    assert canonical_ip("FD00:0:0::1") == "fd00::1"
    assert canonical_ip("10.0.0.1") == "10.0.0.1"


# --- status ------------------------------------------------------------------------


NOW = datetime(2026, 11, 25, 2, 0, 0, 123456, tzinfo=UTC)


def test_status_round_trip() -> None:
    status = NodeTaskStatus.model_validate(
        {
            "nodetaskStatus": "creating",
            "nodeStatus": {"edge-ab12cd": "172.21.3.194"},
            "planned": 2,
            "joined": 1,
            "machines": {
                "edge-ab12cd": {"phase": "installing", "attempts": 2, "lastError": "x\n  y"},
                "edge-zz99aa": {"phase": "joined", "attempts": 1},
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Installing",
                    "message": "1 of 2 joined",
                    "lastTransitionTime": "2026-11-25T02:00:00Z",
                    "observedGeneration": 1,
                }
            ],
            "observedGeneration": 1,
        }
    )
    assert status.nodetask_status is TaskPhase.CREATING
    assert list(status.machines) == ["edge-ab12cd"]  # joined machines are only counted
    assert status.machines["edge-ab12cd"].last_error == "x y"
    out = status.to_dict()
    assert out["conditions"][0]["lastTransitionTime"] == "2026-11-25T02:00:00Z"
    assert out["machines"] == {
        "edge-ab12cd": {"phase": "installing", "attempts": 2, "lastError": "x y"}
    }
    assert NodeTaskStatus.model_validate(out) == status
    assert status.condition("Ready") is not None
    assert status.condition("Other") is None


def test_condition_time_is_utc_seconds() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=8)))
    c = Condition(type="Ready", status="True", reason="AllJoined", last_transition_time=local)
    assert c.to_dict()["lastTransitionTime"] == "2026-11-25T02:00:00Z"
    with pytest.raises(ValidationError, match="timezone-aware"):
        Condition(
            type="Ready", status="True", reason="A", last_transition_time=NOW.replace(tzinfo=None)
        )
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="Maybe", reason="A", last_transition_time=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason="not camel", last_transition_time=NOW)


def test_truncate_error() -> None:
    assert truncate_error("  a\tb\n\nc ") == "a b c"
    long = truncate_error("e" * 1000)
    assert len(long) == 200
    assert long.endswith("...")
    assert (
        MachineStatus(phase=MachinePhase.FAILED, last_error="z" * 500).last_error
        == "z" * 197 + "..."
    )
    assert MachineStatus(phase=MachinePhase.FAILED, last_error="   ").last_error is None


def test_machine_phases() -> None:
    assert [p.value for p in MachinePhase] == [
        "pending",
        "connecting",
        "transferring",
        "installing",
        "joining",
        "joined",
        "failed",
    ]
    assert MachinePhase.JOINED.finished
    assert MachinePhase.FAILED.finished
    assert not MachinePhase.JOINING.finished
    assert [p.value for p in TaskPhase] == ["creating", "ready", "failed"]


def test_errors_kept_for_failed_machines_first() -> None:
    machines = {
        f"edge-{i:06d}": MachineStatus(
            phase=MachinePhase.FAILED if i % 2 else MachinePhase.CONNECTING,
            attempts=1,
            last_error=f"error {i}",
        )
        for i in range(1000)
    }
    status = NodeTaskStatus(machines=machines)
    with_error = [m for m in status.machines.values() if m.last_error]
    assert len(with_error) == 200
    assert all(m.phase is MachinePhase.FAILED for m in with_error)
    assert len(status.machines) == 1000


def test_truncate_error_counts_utf8_bytes_and_never_splits_a_character() -> None:
    cut = truncate_error("\U0001f600" * 100)
    assert len(cut.encode()) <= 200
    assert cut == "\U0001f600" * 49 + "..."
