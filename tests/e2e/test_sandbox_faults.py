"""Each fault does what it says, on the wire, and `clear` undoes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from penetrator.sandbox.lifecycle import Sandbox
from penetrator.sandbox.sshprobe import tcp_check
from penetrator.sandbox.state import install_fails_marker
from penetrator.sandbox.topology import Fault

pytestmark = [pytest.mark.netns]


@pytest.fixture
def sandbox_faulty(sandbox_net: Sandbox) -> Iterator[tuple[Sandbox, str, str]]:
    """(sandbox, faulted machine IP, healthy neighbour IP) in intranet 1; every
    fault is cleared afterwards."""
    it = sandbox_net.topology.intranets[0]
    ip, other = it.machines[0].ip, it.machines[1].ip
    try:
        yield sandbox_net, ip, other
    finally:
        sandbox_net.fault(1, ip, None)


def _ok_after_clear(sb: Sandbox, ssh: Any, ip: str) -> None:
    sb.fault(1, ip, None)
    assert sb.status()["machines"][0]["fault"] is None
    r = ssh(sb, 1, [ip], "echo $EDGE_MACHINE_IP", password=True, key=False)
    assert r["ok"] == 1, r["results"]


def test_down_drops_every_packet(sandbox_faulty: Any, sandbox_ssh: Any) -> None:
    sb, ip, other = sandbox_faulty
    sb.fault(1, ip, Fault.DOWN)
    res = tcp_check(sb.topology.proxy_namespace(1), [(ip, 22), (other, 22)], timeout=1.5)
    assert res == {f"{ip}:22": "timeout", f"{other}:22": "ok"}
    _ok_after_clear(sb, sandbox_ssh, ip)


def test_refuse_resets_port_22(sandbox_faulty: Any, sandbox_ssh: Any) -> None:
    sb, ip, other = sandbox_faulty
    sb.fault(1, ip, Fault.REFUSE)
    res = tcp_check(sb.topology.proxy_namespace(1), [(ip, 22), (other, 22)], timeout=2)
    assert res == {f"{ip}:22": "refused", f"{other}:22": "ok"}
    _ok_after_clear(sb, sandbox_ssh, ip)


def test_wrong_password_refuses_the_password_but_not_the_key(
    sandbox_faulty: Any, sandbox_ssh: Any
) -> None:
    sb, ip, other = sandbox_faulty
    sb.fault(1, ip, Fault.WRONG_PASSWORD)
    r = sandbox_ssh(sb, 1, [ip, other], "true", password=True, key=False)
    by = {x["host"]: x for x in r["results"]}
    assert not by[ip]["ok"]
    assert "PermissionDenied" in by[ip]["error"]
    assert by[other]["ok"]
    r = sandbox_ssh(sb, 1, [ip], "echo $EDGE_MACHINE_IP", key=True)
    assert r["results"][0]["stdout"].strip() == ip  # same machine, reached by key
    _ok_after_clear(sb, sandbox_ssh, ip)


def test_new_host_key_fails_a_pinned_client(sandbox_faulty: Any, sandbox_ssh: Any) -> None:
    sb, ip, other = sandbox_faulty
    sb.fault(1, ip, Fault.NEW_HOST_KEY)
    r = sandbox_ssh(sb, 1, [ip, other], "true", known_hosts=True)
    by = {x["host"]: x for x in r["results"]}
    assert "HostKeyNotVerifiable" in by[ip]["error"]
    assert by[other]["ok"]
    r = sandbox_ssh(sb, 1, [ip], "echo $EDGE_MACHINE_IP", known_hosts=False)
    assert r["results"][0]["stdout"].strip() == ip  # it is the same machine
    _ok_after_clear(sb, sandbox_ssh, ip)


def test_slow_delays_every_round_trip(sandbox_faulty: Any, sandbox_ssh: Any) -> None:
    sb, ip, other = sandbox_faulty
    delay = sb.topology.spec.slow_delay_ms / 1000
    sb.fault(1, ip, Fault.SLOW)
    r = sandbox_ssh(sb, 1, [ip, other], "echo $EDGE_MACHINE_IP", timeout=30)
    by = {x["host"]: x for x in r["results"]}
    assert by[ip]["ok"], by[ip]
    assert by[ip]["stdout"].strip() == ip
    # an SSH login needs several round trips, each 2*delay longer
    assert by[ip]["seconds"] > 4 * delay, by[ip]["seconds"]
    assert by[other]["seconds"] < by[ip]["seconds"]
    _ok_after_clear(sb, sandbox_ssh, ip)


def test_install_fails_is_a_marker_in_the_machine_state(
    sandbox_faulty: Any, sandbox_ssh: Any
) -> None:
    sb, ip, other = sandbox_faulty
    sb.fault(1, ip, Fault.INSTALL_FAILS)
    marker = install_fails_marker(sb.name, 1, ip)
    assert marker.exists()
    assert marker == sb.machine_dir(1, ip) / "install-fails"
    cmd = 'test -e "$EDGE_MACHINE_DIR/install-fails" && echo fails || echo fine'
    r = sandbox_ssh(sb, 1, [ip, other], cmd)
    assert {x["host"]: x["stdout"].strip() for x in r["results"]} == {ip: "fails", other: "fine"}
    _ok_after_clear(sb, sandbox_ssh, ip)
    assert not marker.exists()


def test_helper_ports_are_closed_to_direct_connections(sandbox_net: Sandbox) -> None:
    it = sandbox_net.topology.intranets[0]
    ip = it.machines[0].ip
    sandbox_net.fault(1, ip, Fault.WRONG_PASSWORD)
    try:
        res = tcp_check(it.proxy_ns, [(ip, 2201), (ip, 2203)], timeout=2)
        assert set(res.values()) == {"refused"}
    finally:
        sandbox_net.fault(1, ip, None)
