"""Layout addresses at small N: many machine addresses on few namespaces and
sshds, each machine still itself; concurrent sessions; per-address faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import Sandbox, down, leftover_namespaces, leftover_pids
from penetrator_dev.sandbox.sshprobe import tcp_check
from penetrator_dev.sandbox.topology import Fault

pytestmark = [pytest.mark.netns]

N = 40
PER_HOST = 16


@pytest.fixture(scope="module")
def sandbox_addr(sandbox_factory: Any) -> Iterator[Sandbox]:
    sb = sandbox_factory(
        machines=N, intranets=2, layout="addresses", per_host=PER_HOST, arm_every=4
    )
    try:
        yield sb
    finally:
        down(sb.name)


def test_few_namespaces_and_sshds_many_machines(sandbox_addr: Sandbox) -> None:
    st = sandbox_addr.status()
    assert len(st["machines"]) == 2 * N
    assert {m["layout"] for m in st["machines"]} == {"addresses"}
    per_intranet = -(-N // PER_HOST)
    sshd = [p for p in st["processes"] if p["role"] == "sshd"]
    assert len(sshd) == 2 * per_intranet
    assert all(p["alive"] for p in st["processes"])
    for it in st["intranets"]:
        assert len(it["machine_namespaces"]) == per_intranet


def test_concurrent_sessions_each_see_their_own_machine(
    sandbox_addr: Sandbox, sandbox_ssh: Any
) -> None:
    it = sandbox_addr.topology.intranets[0]
    ips = [m.ip for m in it.machines]
    cmd = 'echo "$EDGE_MACHINE_IP $(uname -m)"; echo x >> "$EDGE_MACHINE_DIR/sessions"'
    r = sandbox_ssh(sandbox_addr, 1, ips, cmd, concurrency=2 * N, repeat=2)
    assert r["failed"] == 0, [x for x in r["results"] if not x["ok"]][:3]
    for x in r["results"]:
        ip, arch = x["stdout"].split()
        assert ip == x["host"]
        m = sandbox_addr.topology.machine(1, ip)
        assert arch == m.arch
        assert arch == ("aarch64" if m.index % 4 == 0 else "x86_64")
    for ip in ips:
        lines = (sandbox_addr.machine_dir(1, ip) / "sessions").read_text().splitlines()
        assert len(lines) == 2


def test_password_login_and_second_intranet(sandbox_addr: Sandbox, sandbox_ssh: Any) -> None:
    ips = [m.ip for m in sandbox_addr.topology.intranets[1].machines][:5]
    r = sandbox_ssh(sandbox_addr, 2, ips, "echo $EDGE_INTRANET", password=True, key=False)
    assert r["failed"] == 0
    assert {x["stdout"].strip() for x in r["results"]} == {"2"}


def test_faults_hit_one_address_of_a_shared_namespace(
    sandbox_addr: Sandbox, sandbox_ssh: Any
) -> None:
    it = sandbox_addr.topology.intranets[0]
    host = it.hosts[0]
    a, b, c, d = host.addresses[:4]
    faults = {a: Fault.REFUSE, b: Fault.DOWN, c: Fault.NEW_HOST_KEY}
    try:
        for ip, f in faults.items():
            sandbox_addr.fault(1, ip, f)
        res = tcp_check(it.proxy_ns, [(ip, 22) for ip in (a, b, c, d)], timeout=1.5)
        assert res == {
            f"{a}:22": "refused",
            f"{b}:22": "timeout",
            f"{c}:22": "ok",
            f"{d}:22": "ok",
        }
        r = sandbox_ssh(sandbox_addr, 1, [c, d], "echo $EDGE_MACHINE_IP")
        by = {x["host"]: x for x in r["results"]}
        assert "HostKeyNotVerifiable" in by[c]["error"]
        assert by[d]["stdout"].strip() == d
        r = sandbox_ssh(sandbox_addr, 1, [c], "echo $EDGE_MACHINE_IP", known_hosts=False)
        assert r["results"][0]["stdout"].strip() == c
    finally:
        for ip in faults:
            sandbox_addr.fault(1, ip, None)
    r = sandbox_ssh(sandbox_addr, 1, [a, b, c, d], "true")
    assert r["failed"] == 0


def test_down_of_the_addresses_layout_leaves_nothing(sandbox_factory: Any) -> None:
    sb = sandbox_factory(machines=60, layout="addresses", per_host=25)
    pids = leftover_pids(sb.name)
    assert len(pids) >= 4
    down(sb.name)
    assert leftover_namespaces(sb.name) == []
    assert leftover_pids(sb.name) == []
