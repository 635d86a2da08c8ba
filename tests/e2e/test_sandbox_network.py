"""The one-way network: edge -> cloud yes, cloud -> edge no, proxy -> its own
intranet's machines yes, other intranets no; routed intranets reachable."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import Sandbox
from penetrator_dev.sandbox.network import exec_argv
from penetrator_dev.sandbox.sshprobe import tcp_check

pytestmark = [pytest.mark.netns]

LISTENER = r"""
import json, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
s.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        c, a = s.accept()
    except socket.timeout:
        continue
    print(json.dumps(a[0]), flush=True)
    c.close()
"""


@pytest.fixture
def cloud_listener(sandbox_net: Sandbox) -> Iterator[subprocess.Popen[str]]:
    """A tiny TCP listener on the apiserver address inside the cloud namespace."""
    c = sandbox_net.topology.cloud
    p = subprocess.Popen(
        exec_argv(
            c.namespace,
            [sys.executable, "-c", LISTENER, c.address, str(c.apiserver_port), "60"],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        p.kill()
        p.wait(timeout=10)


def _peers(p: subprocess.Popen[str]) -> list[str]:
    p.kill()
    out, _ = p.communicate(timeout=10)
    return [json.loads(line) for line in out.splitlines() if line.startswith('"')]


def test_every_machine_reaches_the_cloud_apiserver_address(
    sandbox_net: Sandbox, cloud_listener: subprocess.Popen[str]
) -> None:
    topo = sandbox_net.topology
    api = (topo.cloud.address, topo.cloud.apiserver_port)
    for m in topo.machines():
        res = tcp_check(m.namespace, [api], timeout=3)
        assert res == {f"{api[0]}:{api[1]}": "ok"}, (m, res)
    for it in topo.intranets:
        assert tcp_check(it.proxy_ns, [api], timeout=3) == {f"{api[0]}:{api[1]}": "ok"}
    peers = _peers(cloud_listener)
    # NAT'd intranets arrive as their router; the routed one as the machines themselves
    for it in topo.intranets:
        if it.routed:
            assert {m.ip for m in it.machines} <= set(peers)
        else:
            assert it.router_wan in peers
            assert not {m.ip for m in it.machines} & set(peers)


def test_host_reaches_the_cloud_apiserver_through_the_forwarder(
    sandbox_net: Sandbox, cloud_listener: subprocess.Popen[str]
) -> None:
    port = sandbox_net.status()["cloud"]["forward"]["port"]
    assert port > 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(10) == b""  # the listener accepts and closes
    assert sandbox_net.topology.cloud.address in _peers(cloud_listener)


def test_the_cloud_cannot_open_a_connection_to_nat_machines(sandbox_net: Sandbox) -> None:
    topo = sandbox_net.topology
    nat = [m for it in topo.intranets if not it.routed for m in it.machines]
    targets = [(m.ip, 22) for m in nat]
    targets += [(it.proxy_ip, 22) for it in topo.intranets if not it.routed]
    res = tcp_check(topo.cloud.namespace, targets, timeout=2)
    assert all(v != "ok" for v in res.values()), res
    routed = [it for it in topo.intranets if it.routed]
    assert routed
    res = tcp_check(topo.cloud.namespace, [(m.ip, 22) for m in routed[0].machines], timeout=3)
    assert set(res.values()) == {"ok"}, res  # --routed: the cloud reaches them


def test_the_proxy_node_reaches_every_machine_of_its_intranet(sandbox_net: Sandbox) -> None:
    for it in sandbox_net.topology.intranets:
        res = tcp_check(it.proxy_ns, [(m.ip, 22) for m in it.machines], timeout=3)
        assert set(res.values()) == {"ok"}, (it.index, res)


def test_a_proxy_node_never_reaches_another_intranet(
    sandbox_net: Sandbox, sandbox_ssh: Any
) -> None:
    topo = sandbox_net.topology
    i1, i2, i3 = topo.intranets
    # same addresses in intranets 1 and 2: proxy 1 always lands in intranet 1
    r = sandbox_ssh(sandbox_net, 1, [m.ip for m in i2.machines], "echo $EDGE_INTRANET")
    assert r["ok"] == len(i2.machines)
    assert {x["stdout"].strip() for x in r["results"]} == {"1"}
    # the routed intranet's machines (own range) and other routers: unreachable
    targets = [(m.ip, 22) for m in i3.machines] + [(i3.proxy_ip, 22), (i2.router_wan, 22)]
    res = tcp_check(i1.proxy_ns, targets, timeout=2)
    assert all(v != "ok" for v in res.values()), res
    # and no machine of intranet 1 reaches intranet 3's machines either
    res = tcp_check(i1.machines[0].namespace, [(i3.machines[0].ip, 22)], timeout=2)
    assert all(v != "ok" for v in res.values()), res


def test_nothing_is_attached_to_the_host_namespace(sandbox_net: Sandbox) -> None:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"{sandbox_net.name}-" not in links.stdout
    for ns in sandbox_net.topology.namespaces():
        out = subprocess.run(
            exec_argv(ns, ["ip", "-o", "link"]), capture_output=True, text=True, check=True
        ).stdout
        # every veth's peer is in one of our namespaces
        for line in out.splitlines():
            if "@if" in line:
                m = re.search(r"link-netns (\S+)", line)
                assert m, line
                assert m.group(1) in sandbox_net.topology.namespaces(), line
