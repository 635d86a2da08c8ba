"""up is idempotent; down removes every namespace, veth, rule, mount and
process, from the state file and also after kill -9 of everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import (
    Sandbox,
    SandboxError,
    down,
    leftover_mounts,
    leftover_namespaces,
    leftover_pids,
)
from penetrator_dev.sandbox.state import state_dir
from penetrator_dev.sandbox.topology import Fault, SandboxSpec
from support import venv_bin

pytestmark = [pytest.mark.netns]


def _host_snapshot() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return {
        "links": out(["ip", "-o", "link"]),
        "routes": out(["ip", "route", "show", "table", "all"]),
        "nft": out(["nft", "list", "ruleset"]),
        "ns": out(["ip", "netns", "list"]),
    }


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_nothing_left(name: str, pids: list[int], before: dict[str, str]) -> None:
    assert leftover_namespaces(name) == []
    assert not any(p.name.startswith(f"{name}-") for p in Path("/run/netns").iterdir())
    assert leftover_mounts(name) == []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert f"/run/netns/{name}-" not in mountinfo
    assert str(state_dir(name)) not in mountinfo
    assert leftover_pids(name) == []
    alive = [p for p in pids if _running(p)]
    assert alive == [], alive
    assert not state_dir(name).exists()
    after = _host_snapshot()
    assert after["links"].count("\n") == before["links"].count("\n")
    assert f"{name}-" not in after["links"]
    assert after["routes"] == before["routes"]
    assert after["nft"] == before["nft"]
    assert f"{name}-" not in after["ns"]


def _all_pids(sb: Sandbox) -> list[int]:
    pids = [p["pid"] for p in sb.status()["processes"]]
    return sorted(set(pids) | set(leftover_pids(sb.name)))


def test_up_is_idempotent_and_refuses_another_spec(sandbox_factory: Any) -> None:
    sb = sandbox_factory(machines=2)
    try:
        pids = [p["pid"] for p in sb.status()["processes"]]
        again = Sandbox.up(sb.topology.spec)
        assert [p["pid"] for p in again.status()["processes"]] == pids
        with pytest.raises(SandboxError, match="another spec"):
            Sandbox.up(SandboxSpec(name=sb.name, machines=3))
    finally:
        down(sb.name)
    down(sb.name)  # down is idempotent too
    assert leftover_namespaces(sb.name) == []


def test_down_leaves_nothing(sandbox_factory: Any, sandbox_ssh: Any) -> None:
    before = _host_snapshot()
    sb = sandbox_factory(machines=3, intranets=2, routed=1)
    ip = sb.topology.intranets[0].machines[0].ip
    # helpers of every kind running, and a live SSH session's processes
    for f, m in zip(
        [Fault.SLOW, Fault.WRONG_PASSWORD, Fault.NEW_HOST_KEY],
        sb.topology.intranets[1].machines,
        strict=True,
    ):
        sb.fault(2, m.ip, f)
    r = sandbox_ssh(sb, 1, [ip], "nohup sleep 300 >/dev/null 2>&1 & echo started")
    assert r["ok"] == 1
    pids = _all_pids(sb)
    assert len(pids) > 10
    rep = down(sb.name)
    assert set(sb.topology.namespaces()) <= set(rep.namespaces)
    assert_nothing_left(sb.name, pids, before)


def test_down_after_kill_9_of_everything(sandbox_factory: Any) -> None:
    before = _host_snapshot()
    sb = sandbox_factory(machines=3, layout=None)
    sb.fault(1, sb.topology.intranets[0].machines[0].ip, Fault.SLOW)
    pids = _all_pids(sb)
    for p in pids:
        os.kill(p, signal.SIGKILL)
    rep = down(sb.name)
    assert rep.namespaces
    assert_nothing_left(sb.name, pids, before)


def test_down_without_a_state_file_finds_leftovers_by_name(sandbox_factory: Any) -> None:
    before = _host_snapshot()
    sb = sandbox_factory(machines=2, layout=None)
    pids = _all_pids(sb)
    (state_dir(sb.name) / "state.json").unlink()
    down(sb.name)
    assert_nothing_left(sb.name, pids, before)


def test_cli_up_status_down(sandbox_factory: Any, sandbox_new_name: Any) -> None:
    name = sandbox_new_name()
    cli = [str(venv_bin() / "penetrator-dev")]
    env = dict(os.environ)
    try:
        up = subprocess.run(
            [*cli, "sandbox", "up", "--name", name, "-n", "2", "--routed", "--fault",
             "10.10.1.2=refuse"],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert f"export PENETRATOR_SANDBOX={name}" in up.stdout
        assert "PENETRATOR_SANDBOX_APISERVER=127.0.0.1:" in up.stdout
        st = json.loads(
            subprocess.run(
                [*cli, "sandbox", "status", "--name", name, "-o", "json"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout
        )  # fmt: skip
        assert st["up"] is True
        assert {it["proxy"]["address"] for it in st["intranets"]} == {"10.10.0.2", "10.102.0.2"}
        assert [it["routed"] for it in st["intranets"]] == [False, True]
        assert st["cloud"]["apiserver"] == {"address": "172.31.0.1", "port": 6443}
        assert st["cloud"]["forward"]["port"] > 0
        faults = {(m["intranet"], m["ip"]): m["fault"] for m in st["machines"]}
        assert faults[(1, "10.10.1.2")] == "refuse"
        assert {m["layout"] for m in st["machines"]} == {"netns"}
        assert set(st["namespaces"]) <= set(leftover_namespaces(name))
        for f in ("password_file", "private_key"):
            assert Path(st["ssh"][f]).exists()
        ex = subprocess.run(
            [*cli, "sandbox", "exec", "--name", name, "proxy-1", "ip", "-o", "-4", "addr"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "10.10.0.2/16" in ex.stdout
        dn = subprocess.run(
            [*cli, "sandbox", "down", "--name", name],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert dn.returncode == 0, dn.stderr
        assert leftover_namespaces(name) == []
    finally:
        down(name)


def test_spawned_processes_are_listed_and_stopped_by_down(sandbox_factory: Any) -> None:
    sb = sandbox_factory(machines=1)
    rec = sb.spawn("cloud", ["sleep", "300"], role="test-sleeper")
    try:
        assert _running(rec.pid)
        assert rec.namespace == sb.topology.cloud.namespace
        roles = {p["role"]: p["alive"] for p in sb.status()["processes"]}
        assert roles["test-sleeper"] is True
        assert Sandbox.up(sb.topology.spec).status()["up"] is True  # still healthy
    finally:
        down(sb.name)
    assert not _running(rec.pid)
