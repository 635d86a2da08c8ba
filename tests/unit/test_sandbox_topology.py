"""The pure sandbox description: names, addresses, lookups, rulesets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penetrator_dev.sandbox import network as net
from penetrator_dev.sandbox.topology import (
    Fault,
    Layout,
    SandboxSpec,
    build_topology,
    machine_ip,
)

IFNAMSIZ = 15


def test_default_spec_is_three_netns_machines_behind_one_nat() -> None:
    t = build_topology(SandboxSpec())
    assert t.cloud.namespace == "pn-cloud"
    assert (t.cloud.address, t.cloud.apiserver_port) == ("172.31.0.1", 6443)
    (it,) = t.intranets
    assert not it.routed
    assert it.proxy_ns == "pn-p1"
    assert it.proxy_ip == "10.10.0.2"
    assert [m.ip for m in it.machines] == ["10.10.1.1", "10.10.1.2", "10.10.1.3"]
    assert it.layout is Layout.NETNS
    assert t.namespaces() == ["pn-cloud", "pn-r1", "pn-p1", "pn-i1m1", "pn-i1m2", "pn-i1m3"]


def test_layout_defaults_by_size() -> None:
    assert SandboxSpec(machines=50).resolved_layout() is Layout.NETNS
    assert SandboxSpec(machines=51).resolved_layout() is Layout.ADDRESSES
    assert SandboxSpec(machines=5, layout="addresses").resolved_layout() is Layout.ADDRESSES  # type: ignore[arg-type]


def test_nat_intranets_reuse_the_range_routed_ones_do_not() -> None:
    t = build_topology(SandboxSpec(machines=2, intranets=2, routed=2))
    cidrs = [it.cidr for it in t.intranets]
    assert cidrs[0] == cidrs[1] == "10.10.0.0/16"
    assert cidrs[2] != cidrs[3]
    assert [it.routed for it in t.intranets] == [False, False, True, True]
    assert t.machine(1, "10.10.1.1").namespace != t.machine(2, "10.10.1.1").namespace
    assert t.proxy_namespace(2) == "pn-p2"
    assert t.resolve_namespace("proxy-2") == "pn-p2"
    assert t.resolve_namespace("cloud") == "pn-cloud"
    assert t.resolve_namespace("10.10.1.2", intranet=2) == "pn-i2m2"
    with pytest.raises(KeyError):
        t.machine(1, "10.10.9.9")


def test_addresses_layout_packs_machines_into_hosts() -> None:
    t = build_topology(SandboxSpec(machines=1000, layout=Layout.ADDRESSES, per_host=250))
    (it,) = t.intranets
    assert len(it.hosts) == 4
    assert sum(len(h.addresses) for h in it.hosts) == 1000
    assert t.machine(1, it.machines[999].ip).namespace == "pn-i1h4"
    assert it.machines[250].ip == "10.10.2.1"


def test_arm_every() -> None:
    t = build_topology(SandboxSpec(machines=6, arm_every=3))
    assert [m.arch for m in t.machines()] == ["x86_64", "x86_64", "aarch64"] * 2


@pytest.mark.parametrize(
    "spec",
    [
        SandboxSpec(name="Bad"),
        SandboxSpec(name="toolongname"),
        SandboxSpec(name="a-b"),
        SandboxSpec(intranets=0),
        SandboxSpec(machines=301, layout=Layout.NETNS),
        SandboxSpec(per_host=0),
        SandboxSpec(slow_delay_ms=-1),
    ],
)
def test_invalid_specs_are_refused(spec: SandboxSpec) -> None:
    with pytest.raises(ValueError, match=r"."):
        build_topology(spec)


@settings(max_examples=40, deadline=None)
@given(
    machines=st.integers(0, 700),
    intranets=st.integers(0, 3),
    routed=st.integers(0, 2),
    per_host=st.integers(1, 300),
)
def test_addresses_are_unique_inside_the_range_and_names_fit(
    machines: int, intranets: int, routed: int, per_host: int
) -> None:
    if intranets + routed == 0:
        return
    spec = SandboxSpec(
        name="abcdefgh",
        machines=machines,
        intranets=intranets,
        routed=routed,
        layout=Layout.ADDRESSES,
        per_host=per_host,
    )
    t = build_topology(spec)
    assert len(set(t.namespaces())) == len(t.namespaces())
    for it in t.intranets:
        netw = ipaddress.ip_network(it.cidr)
        ips = [m.ip for m in it.machines]
        assert len(set(ips)) == machines
        reserved = {it.gateway, it.proxy_ip}
        for ip in ips:
            a = ipaddress.ip_address(ip)
            assert a in netw
            assert ip not in reserved
            assert a not in (netw.network_address, netw.broadcast_address)
            assert not ip.endswith((".0", ".255"))
        for h in it.hosts:
            assert len(h.port) <= IFNAMSIZ
    assert all(len(it.cloud_port) <= IFNAMSIZ for it in t.intranets)


def test_machine_ip_rows() -> None:
    n = ipaddress.IPv4Network("10.10.0.0/16")
    assert machine_ip(n, 1) == "10.10.1.1"
    assert machine_ip(n, 250) == "10.10.1.250"
    assert machine_ip(n, 251) == "10.10.2.1"


def test_router_ruleset_nat_and_one_way() -> None:
    t = build_topology(SandboxSpec(intranets=1, routed=1))
    nat, routed = t.intranets
    rs = net.router_ruleset(nat)
    assert 'oifname "wan" ip saddr 10.10.0.0/16 masquerade' in rs
    assert "policy drop" in rs
    assert 'iifname "wan" oifname "lan" accept' not in rs
    rr = net.router_ruleset(routed)
    assert "masquerade" not in rr
    assert 'iifname "wan" oifname "lan" accept' in rr


def test_fault_ruleset() -> None:
    rs = net.fault_ruleset(
        {
            "10.10.1.1": Fault.DOWN,
            "10.10.1.2": Fault.REFUSE,
            "10.10.1.3": Fault.SLOW,
            "10.10.1.4": Fault.WRONG_PASSWORD,
            "10.10.1.5": Fault.NEW_HOST_KEY,
            "10.10.1.6": Fault.INSTALL_FAILS,
            "10.10.1.7": Fault.NO_DOWNLOADER,
        }
    )
    assert "ip daddr 10.10.1.1 drop" in rs
    assert "ip daddr 10.10.1.2 tcp dport 22 reject with tcp reset" in rs
    assert "ip daddr 10.10.1.3 tcp dport 22 dnat to 10.10.1.3:2203" in rs
    assert "ip daddr 10.10.1.4 tcp dport 22 dnat to 10.10.1.4:2201" in rs
    assert "ip daddr 10.10.1.5 tcp dport 22 dnat to 10.10.1.5:2202" in rs
    assert "10.10.1.6" not in rs
    assert "10.10.1.7" not in rs  # no-downloader is a marker read by edge-shell
    # reloading replaces the whole table
    assert rs.index("delete table inet pnfault") < rs.index("chain nat_pre")


def test_batches_create_interfaces_inside_namespaces_only() -> None:
    t = build_topology(SandboxSpec(machines=3, intranets=2))
    lines = net.cloud_batch(t)
    for it in t.intranets:
        lines += net.router_batch(t, it)
    for line in lines:
        if " type veth " in line:
            assert " netns " in line  # the peer goes straight into another namespace
    proxy = net.proxy_batch(t.intranets[0])
    assert "route add default via 10.10.0.1" in proxy
    assert sum("nud permanent" in x for x in proxy) == 1 + 3
