"""Each fault does what it says, on the wire, and `clear` undoes it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.sshprobe import tcp_check
from penetrator_dev.sandbox.state import install_fails_marker
from penetrator_dev.sandbox.topology import Fault

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
    # an SSH login needs several round trips, each held 2*delay by the relay: a lower
    # bound the relay guarantees, never a limit a busy machine could break
    assert by[ip]["seconds"] > 4 * delay, by[ip]["seconds"]
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


DOWNLOADERS = (
    'for t in curl wget; do command -v "$t" || echo "no-$t"; done; '
    'if [ -n "$1" ] && "$1" --version >/dev/null 2>&1; then echo ran; else echo cannot-run; fi'
)


def _downloaders(sb: Sandbox, ssh: Any, hosts: list[str], run: str = "") -> dict[str, list[str]]:
    """Per machine: what `command -v curl`/`wget` print, then whether `run` (a
    path) could be run there."""
    cmd = f"sh -c {shlex.quote(DOWNLOADERS)} probe {shlex.quote(run)}"
    r = ssh(sb, 1, hosts, cmd)
    assert r["ok"] == len(hosts), r["results"]
    return {x["host"]: x["stdout"].split() for x in r["results"]}


def test_no_downloader_hides_curl_and_wget_on_that_machine_only(
    sandbox_faulty: Any, sandbox_ssh: Any
) -> None:
    sb, ip, other = sandbox_faulty
    healthy = _downloaders(sb, sandbox_ssh, [ip, other])
    curl, wget = healthy[ip][:2]
    assert curl.endswith("/curl"), healthy
    assert wget.endswith("/wget"), healthy
    assert healthy[other][:2] == [curl, wget]
    sb.fault(1, ip, Fault.NO_DOWNLOADER)
    assert sb.status()["machines"][0]["fault"] == "no-downloader"
    assert (sb.machine_dir(1, ip) / "no-downloader").exists()
    seen = _downloaders(sb, sandbox_ssh, [ip, other], run=curl)
    assert seen[ip] == ["no-curl", "no-wget", "cannot-run"]  # not even by its path
    assert seen[other] == [curl, wget, "ran"]
    # the rest of the machine works as before: identity, checksums, archives
    r = sandbox_ssh(sb, 1, [ip], 'echo "$EDGE_MACHINE_IP" | sha256sum && command -v tar')
    assert r["ok"] == 1, r["results"]
    assert r["results"][0]["stdout"].split()[-1].endswith("/tar")
    _ok_after_clear(sb, sandbox_ssh, ip)
    assert not (sb.machine_dir(1, ip) / "no-downloader").exists()
    assert _downloaders(sb, sandbox_ssh, [ip], run=curl)[ip] == [curl, wget, "ran"]


def test_no_downloader_is_per_machine_when_machines_share_an_sshd(
    sandbox_factory: Any, sandbox_ssh: Any
) -> None:
    """Layout addresses: one sshd (one mount namespace) serves both machines."""
    sb = sandbox_factory(machines=2, layout="addresses")
    try:
        ip, other = (m.ip for m in sb.topology.intranet(1).machines)
        assert sb.topology.machine(1, ip).namespace == sb.topology.machine(1, other).namespace
        curl = _downloaders(sb, sandbox_ssh, [other])[other][0]
        sb.fault(1, ip, Fault.NO_DOWNLOADER)
        seen = _downloaders(sb, sandbox_ssh, [ip, other], run=curl)
        assert seen[ip] == ["no-curl", "no-wget", "cannot-run"]
        assert seen[other] == [curl, seen[other][1], "ran"]
        sb.fault(1, ip, None)
        assert _downloaders(sb, sandbox_ssh, [ip], run=curl)[ip][0] == curl
    finally:
        down(sb.name)
