"""Acceptance at scale: 1,000 machines (layout addresses) up, 200 SSH sessions at
once from the proxy node, and down leaves nothing. How long `up` takes (the
acceptance: under 2 minutes) is measured by bench/sandbox_bench.py."""

from __future__ import annotations

from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import (
    down,
    leftover_mounts,
    leftover_namespaces,
    leftover_pids,
)
from penetrator_dev.sandbox.topology import Layout

pytestmark = [pytest.mark.netns]


def test_thousand_machines_and_200_sessions_at_once(sandbox_factory: Any, sandbox_ssh: Any) -> None:
    sb = sandbox_factory(machines=1000, layout=Layout.ADDRESSES)
    name = sb.name
    try:
        assert len(sb.topology.machines()) == 1000
        ips = [m.ip for m in sb.topology.machines()][::5]  # 200 distinct machines
        r = sandbox_ssh(sb, 1, ips, "echo $EDGE_MACHINE_IP", concurrency=200, timeout=60)
        assert r["failed"] == 0, [x for x in r["results"] if not x["ok"]][:3]
        assert all(x["stdout"].strip() == x["host"] for x in r["results"])
        pids = leftover_pids(name)
    finally:
        down(name)
    assert leftover_namespaces(name) == []
    assert leftover_pids(name) == []
    assert leftover_mounts(name) == []
    assert pids
