"""A 5,000-machine task stays far below etcd's 1.5 MiB object limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from penetrator.api import (
    API_VERSION,
    MAX_MACHINE_ENTRIES,
    MAX_MACHINES,
    MAX_MACHINES_WITH_ERROR,
    MAX_PLAN_BYTES,
    MachinePhase,
    MachineStatus,
    NodeTask,
    NodeTaskSpec,
    NodeTaskStatus,
    TaskPhase,
    validation_messages,
)

ETCD_LIMIT = 1536 * 1024


def size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def worst_status(names: list[str], ips: list[str]) -> NodeTaskStatus:
    """Nothing joined, every machine failed after many attempts with a long error."""
    return NodeTaskStatus(
        nodetask_status=TaskPhase.FAILED,
        node_status=dict(zip(names, ips, strict=True)),
        planned=len(names),
        failed=len(names),
        machines={
            n: MachineStatus(
                phase=MachinePhase.FAILED, attempts=2**31 - 1, last_error="\U0001f600" * 500
            )
            for n in names
        },
        observed_generation=1,
    )


def test_worst_case_5000_machine_task_is_far_under_the_limit() -> None:
    # The largest plan the model admits for 5,000 machines: IPv4 addresses of 15
    # characters and names as long as MAX_PLAN_BYTES allows.
    ips = [
        f"172.{100 + i // 156 // 156}.{100 + i // 156 % 156}.{100 + i % 156}" for i in range(5000)
    ]
    assert len(set(ips)) == 5000
    assert all(len(ip) == 15 for ip in ips)
    name_length = MAX_PLAN_BYTES // MAX_MACHINES - 15  # 17
    prefix = "p" * (name_length - 7)
    names = [f"{prefix}-{i:06d}" for i in range(5000)]
    spec = NodeTaskSpec(  # the shape after the webhook: both lists
        node_name_prefix=prefix,
        target_machines=ips,
        node_names_override=dict(zip(names, ips, strict=True)),
        node_names_generated=True,
        ssh_credential="s" * 253,
        proxy_node="p" * 253,
        ssh_port=65535,
    )
    assert spec.plan_bytes() <= MAX_PLAN_BYTES
    status = worst_status(names, ips)
    assert len(status.machines) == MAX_MACHINE_ENTRIES
    assert sum(m.last_error is not None for m in status.machines.values()) == (
        MAX_MACHINES_WITH_ERROR
    )
    task = NodeTask.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "NodeTask",
            "metadata": {"name": "n" * 253},
            "spec": spec.to_dict(),
            "status": status.to_dict(),
        }
    )
    status_bytes = size(task.status.to_dict())
    total = size(task.to_dict())
    assert status_bytes < 320 * 1024, status_bytes
    assert total < 640 * 1024, total
    # kubectl's last-applied annotation repeats the user's spec (before the webhook
    # added nodeNamesOverride), and managedFields name every map key once more
    # ("f:<key>":{}), with the three fields of each machines entry.
    user_spec = spec.model_copy(update={"node_names_override": None, "node_names_generated": None})
    last_applied = size(user_spec.to_dict())
    keys = [*task.spec.plan(), *task.status.node_status]
    managed = sum(len(k) + 8 for k in keys) + sum(
        len(k) + 8 + len('"f:phase":{},"f:attempts":{},"f:lastError":{}')
        for k in task.status.machines
    )
    with_copies = total + last_applied + managed
    assert with_copies < 1024 * 1024, with_copies
    assert with_copies < ETCD_LIMIT * 2 // 3


def test_status_of_longest_names_is_bounded() -> None:
    names = [f"{'n' * 56}-{i:06d}" for i in range(5000)]
    ips = [f"fd00:ffff:ffff:ffff:ffff:ffff:ffff:{i:04x}" for i in range(5000)]
    assert size(worst_status(names, ips).to_dict()) < 1024 * 1024


def test_too_large_a_plan_is_refused_with_the_fix() -> None:
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(5000)]
    with pytest.raises(ValidationError) as info:
        NodeTaskSpec.model_validate(
            {"nodeNamePrefix": "edge-beijing-zone-a", "targetMachines": ips, "sshCredential": "s"}
        )
    (message,) = validation_messages(info.value)
    assert "split the machines over several NodeTasks or use a shorter nodeNamePrefix" in message


def test_5000_machines_with_typical_names_fit() -> None:
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(5000)]
    spec = NodeTaskSpec.model_validate(
        {"nodeNamePrefix": "edge-bj-a1", "targetMachines": ips, "sshCredential": "s"}
    )
    assert spec.plan_bytes() <= MAX_PLAN_BYTES


def test_reinstall_plan_is_bounded_too() -> None:
    override = {f"{'n' * 56}-{i:06d}": f"10.0.{i // 256}.{i % 256}" for i in range(3000)}
    with pytest.raises(ValidationError, match="split the machines"):
        NodeTaskSpec.model_validate({"nodeNamesOverride": override, "sshCredential": "s"})
