"""The sandbox topology: one pure description (no I/O) from which `up`, `status`
and `down` are all derived.

Picture (one sandbox named ``pn``, two NAT'd intranets and one routed one)::

    pn-cloud  (apiserver address 172.31.0.1 on bridge "wan0"; ip_forward=0)
      |  r1 (veth)            r2                     r3
    pn-r1  wan=172.31.0.11   pn-r2  wan=.12          pn-r3  wan=.13   (routers)
      |  bridge "lan" 10.10.0.1/16   (same range)    bridge "lan" 10.103.0.1/16
      +-- pn-p1  proxy node 10.10.0.2                +-- pn-p3 10.103.0.2
      +-- pn-i1m1 10.10.1.1      (layout netns: one namespace per machine)
      +-- pn-i1h1 10.10.1.1 .. 10.10.2.0  (layout addresses: many addresses, one sshd)

Every link has both ends inside namespaces the sandbox created: nothing is ever
connected to the host's network namespace, so no packet can leave the sandbox.
The host reaches the cloud's apiserver address only through a port forwarder
(a process listening on 127.0.0.1 whose outgoing sockets live in the cloud
namespace).

A machine is identified by ``(intranet, ip)``: NAT'd intranets all reuse the
same private range, as real sites do.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")

NAT_CIDR = "10.10.0.0/16"
CLOUD_CIDR = "172.31.0.0/24"
CLOUD_ADDRESS = "172.31.0.1"
ROUTED_CIDR_TEMPLATE = "10.{second}.0.0/16"  # second octet = 100 + intranet index
MACHINES_PER_SUBNET_ROW = 250  # machine j -> 10.x.(1 + (j-1)//250).(1 + (j-1)%250)
MAX_MACHINES_PER_INTRANET = MACHINES_PER_SUBNET_ROW * 254
MAX_INTRANETS = 150
NETNS_LAYOUT_AUTO_LIMIT = 50
NETNS_LAYOUT_MAX = 300

SSH_PORT = 22
# Ports of the per-namespace fault helpers. nft DNATs port 22 of a faulted
# address to one of these (the local address of the session is kept).
WRONG_PASSWORD_PORT = 2201
NEW_HOST_KEY_PORT = 2202
SLOW_RELAY_PORT = 2203
FAULT_PORTS = (WRONG_PASSWORD_PORT, NEW_HOST_KEY_PORT, SLOW_RELAY_PORT)


class Layout(StrEnum):
    NETNS = "netns"
    ADDRESSES = "addresses"


class Fault(StrEnum):
    """What a machine does wrong. Every fault behaves that way on the wire."""

    DOWN = "down"  # every packet to the address is dropped: connects time out
    SLOW = "slow"  # port 22 goes through a relay that delays every chunk
    WRONG_PASSWORD = "wrong-password"  # noqa: S105 - the password file's password is refused
    REFUSE = "refuse"  # port 22 answers with a TCP reset: connection refused
    INSTALL_FAILS = "install-fails"  # marker file in the machine's state directory
    NEW_HOST_KEY = "new-host-key"  # port 22 is served with another host key
    NO_DOWNLOADER = "no-downloader"  # the machine's sessions see no curl and no wget


ARCHES = ("x86_64", "aarch64")
Arch = Literal["x86_64", "aarch64"]


@dataclass(frozen=True)
class SandboxSpec:
    """What the user asked for. Everything else is derived from this."""

    name: str = "pn"
    machines: int = 3  # per intranet
    intranets: int = 1  # NAT'd intranets, numbered 1..intranets
    routed: int = 0  # routed intranets (no NAT), numbered after the NAT'd ones
    layout: Layout | None = None  # None: netns up to 50 machines, else addresses
    per_host: int = 250  # layout addresses: machine addresses per namespace/sshd
    apiserver_port: int = 6443
    forward_port: int = 0  # host 127.0.0.1 port of the forwarder; 0 = any free port
    slow_delay_ms: int = 300  # one-way delay of the "slow" fault
    arm_every: int = 0  # every n-th machine of each intranet answers aarch64 (0: none)
    # the first n machines of intranet 1 join with the real kubeadm, kubelet and
    # containerd (realjoin.py); the others keep the stand-in join
    real_join: int = 0

    def __post_init__(self) -> None:
        if self.layout is not None and not isinstance(self.layout, Layout):
            object.__setattr__(self, "layout", Layout(self.layout))

    def resolved_layout(self) -> Layout:
        if self.layout is not None:
            return self.layout
        return Layout.NETNS if self.machines <= NETNS_LAYOUT_AUTO_LIMIT else Layout.ADDRESSES

    def validate(self) -> None:
        """Raise ValueError with a clear message when the spec cannot be built."""
        if not NAME_RE.match(self.name):
            raise ValueError(
                f"sandbox name {self.name!r} must be 1-8 lowercase letters/digits, "
                "starting with a letter"
            )
        if not 0 <= self.machines <= MAX_MACHINES_PER_INTRANET:
            raise ValueError(f"machines must be 0..{MAX_MACHINES_PER_INTRANET} per intranet")
        total = self.intranets + self.routed
        if self.intranets < 0 or self.routed < 0 or not 1 <= total <= MAX_INTRANETS:
            raise ValueError(f"need 1..{MAX_INTRANETS} intranets in total")
        if self.resolved_layout() is Layout.NETNS and self.machines > NETNS_LAYOUT_MAX:
            raise ValueError(
                f"layout netns is limited to {NETNS_LAYOUT_MAX} machines per intranet; "
                "use --layout addresses"
            )
        if not 1 <= self.per_host <= 10_000:
            raise ValueError("per_host must be 1..10000")
        if not 1 <= self.apiserver_port <= 65535 or not 0 <= self.forward_port <= 65535:
            raise ValueError("bad port")
        if not 0 <= self.slow_delay_ms <= 10_000:
            raise ValueError("slow_delay_ms must be 0..10000")
        if self.arm_every < 0:
            raise ValueError("arm_every must be >= 0")
        if not 0 <= self.real_join <= self.machines:
            raise ValueError(f"real_join must be 0..{self.machines} (the machines of intranet 1)")


@dataclass(frozen=True)
class Machine:
    intranet: int
    index: int  # 1-based within its intranet
    ip: str
    namespace: str  # where its address lives (its own, or a shared host namespace)
    arch: Arch = "x86_64"

    @property
    def key(self) -> str:
        return machine_key(self.intranet, self.ip)


@dataclass(frozen=True)
class MachineHost:
    """A namespace holding machine addresses and running one sshd."""

    namespace: str
    port: str  # its bridge port (veth end) in the router namespace
    addresses: tuple[str, ...]
    prefixlen: int


@dataclass(frozen=True)
class Intranet:
    index: int
    routed: bool
    cidr: str
    router_ns: str
    router_wan: str  # router's address on the cloud side
    cloud_port: str  # veth end in the cloud namespace (bridge port of wan0)
    gateway: str  # router's address on the intranet bridge
    proxy_ns: str
    proxy_ip: str
    layout: Layout
    hosts: tuple[MachineHost, ...]
    machines: tuple[Machine, ...]

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen


@dataclass(frozen=True)
class Cloud:
    namespace: str
    bridge: str
    address: str  # the apiserver listens here later
    cidr: str
    apiserver_port: int


@dataclass(frozen=True)
class Topology:
    spec: SandboxSpec
    cloud: Cloud
    intranets: tuple[Intranet, ...]
    _by_key: dict[str, Machine] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def prefix(self) -> str:
        return ns_prefix(self.spec.name)

    def namespaces(self) -> list[str]:
        """Every namespace, in creation order (cloud, then per intranet router,
        proxy, machine hosts)."""
        out = [self.cloud.namespace]
        for it in self.intranets:
            out += [it.router_ns, it.proxy_ns]
            out += [h.namespace for h in it.hosts]
        return out

    def machines(self) -> list[Machine]:
        return [m for it in self.intranets for m in it.machines]

    def intranet(self, index: int) -> Intranet:
        for it in self.intranets:
            if it.index == index:
                return it
        raise KeyError(f"no intranet {index} (have 1..{len(self.intranets)})")

    def machine(self, intranet: int, ip: str) -> Machine:
        if not self._by_key:
            self._by_key.update({m.key: m for m in self.machines()})
        try:
            return self._by_key[machine_key(intranet, ip)]
        except KeyError:
            raise KeyError(f"no machine {ip} in intranet {intranet}") from None

    def proxy_namespace(self, intranet: int) -> str:
        return self.intranet(intranet).proxy_ns

    def machine_namespace(self, intranet: int, ip: str) -> str:
        return self.machine(intranet, ip).namespace

    def resolve_namespace(self, target: str, intranet: int = 1) -> str:
        """`cloud`, `proxy-K`, `router-K`, a machine IP (in `intranet`), or a
        namespace name -> namespace name."""
        if target == "cloud":
            return self.cloud.namespace
        m = re.fullmatch(r"(proxy|router)-?(\d+)", target)
        if m:
            it = self.intranet(int(m.group(2)))
            return it.proxy_ns if m.group(1) == "proxy" else it.router_ns
        if target == "proxy":
            return self.intranet(intranet).proxy_ns
        try:
            ipaddress.ip_address(target)
        except ValueError:
            if target in self.namespaces():
                return target
            raise KeyError(f"unknown target {target!r}") from None
        return self.machine_namespace(intranet, target)


def machine_key(intranet: int, ip: str) -> str:
    return f"{intranet}/{ip}"


def ns_prefix(name: str) -> str:
    return f"{name}-"


def machine_ip(network: ipaddress.IPv4Network, index: int) -> str:
    """Machine `index` (1-based): row 1 + (index-1)//250, host 1 + (index-1)%250,
    so machine 1 is x.y.1.1 and machine 251 is x.y.2.1."""
    row, col = divmod(index - 1, MACHINES_PER_SUBNET_ROW)
    return str(network.network_address + 256 * (row + 1) + col + 1)


def intranet_cidr(index: int, routed: bool) -> str:
    if routed:
        return ROUTED_CIDR_TEMPLATE.format(second=100 + index)
    return NAT_CIDR


def build_topology(spec: SandboxSpec) -> Topology:
    spec.validate()
    name = spec.name
    cloud_net = ipaddress.ip_network(CLOUD_CIDR)
    cloud = Cloud(
        namespace=f"{name}-cloud",
        bridge="wan0",
        address=CLOUD_ADDRESS,
        cidr=CLOUD_CIDR,
        apiserver_port=spec.apiserver_port,
    )
    layout = spec.resolved_layout()
    intranets: list[Intranet] = []
    total = spec.intranets + spec.routed
    for k in range(1, total + 1):
        routed = k > spec.intranets
        cidr = intranet_cidr(k, routed)
        net = ipaddress.ip_network(cidr)
        assert isinstance(net, ipaddress.IPv4Network)
        machines: list[Machine] = []
        hosts: list[MachineHost] = []
        ips = [machine_ip(net, j) for j in range(1, spec.machines + 1)]

        def arch_of(j: int) -> Arch:
            return "aarch64" if spec.arm_every and j % spec.arm_every == 0 else "x86_64"

        if layout is Layout.NETNS:
            for j, ip in enumerate(ips, start=1):
                ns = f"{name}-i{k}m{j}"
                hosts.append(MachineHost(ns, f"m{j}", (ip,), net.prefixlen))
                machines.append(Machine(k, j, ip, ns, arch_of(j)))
        else:
            for h, start in enumerate(range(0, len(ips), spec.per_host), start=1):
                ns = f"{name}-i{k}h{h}"
                chunk = tuple(ips[start : start + spec.per_host])
                hosts.append(MachineHost(ns, f"h{h}", chunk, net.prefixlen))
                for off, ip in enumerate(chunk):
                    j = start + off + 1
                    machines.append(Machine(k, j, ip, ns, arch_of(j)))
        intranets.append(
            Intranet(
                index=k,
                routed=routed,
                cidr=cidr,
                router_ns=f"{name}-r{k}",
                router_wan=str(cloud_net.network_address + 10 + k),
                cloud_port=f"r{k}",
                gateway=str(net.network_address + 1),
                proxy_ns=f"{name}-p{k}",
                proxy_ip=str(net.network_address + 2),
                layout=layout,
                hosts=tuple(hosts),
                machines=tuple(machines),
            )
        )
    return Topology(spec=spec, cloud=cloud, intranets=tuple(intranets))
