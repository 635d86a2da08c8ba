"""The cluster's own addresses, which a task may not list as machines (pure).

The address classes no machine has (loopback, unspecified, link-local, multicast) are
refused by the spec itself (``penetrator.api.check_machine_address`` and the CRD's
rule). What needs the cluster's facts is here: its Service and Pod networks, and the
addresses of its Nodes. An add task may not list a Node's address (it would install
a second node on a machine that is one already, or point the Job at a cluster
member); a reinstall may list a Node's address: that Node is the one it replaces
(``replaced_nodes``, whose deletion the requester must be allowed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from penetrator.api import parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
INTERNAL_IP = "InternalIP"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
"""A Node carrying either label is a control-plane node (kubeadm sets the first)."""


@dataclass(frozen=True)
class NodeFacts:
    """What admission needs of one Node: its addresses (type -> list) and whether it
    is a control-plane node."""

    name: str
    addresses: tuple[tuple[str, str], ...] = ()
    """(type, address) as in ``status.addresses`` (InternalIP, ExternalIP, ...)."""
    control_plane: bool = False
    pod_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterNetworks:
    """The cluster's own addresses: Service networks (ServiceCIDR objects), Pod
    networks (the Nodes' ``spec.podCIDRs``, merged) and Nodes (by name and by
    address). Made by ``of``."""

    service_cidrs: tuple[Network, ...] = ()
    pod_cidrs: tuple[Network, ...] = ()
    nodes: Mapping[str, NodeFacts] = field(default_factory=dict)
    by_address: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Canonical address -> (node name, address type)."""

    @classmethod
    def of(cls, service_cidrs: Iterable[str], nodes: Iterable[NodeFacts]) -> ClusterNetworks:
        by_name = {n.name: n for n in nodes}
        by_address: dict[str, tuple[str, str]] = {}
        for node in by_name.values():
            for kind, text in node.addresses:
                try:
                    key = str(ipaddress.ip_address(text))
                except ValueError:
                    continue
                if kind == INTERNAL_IP or key not in by_address:
                    by_address[key] = (node.name, kind)
        pods = networks(c for n in by_name.values() for c in n.pod_cidrs)
        return cls(networks(service_cidrs), _collapse(pods), by_name, by_address)

    def node_at(self, ip: str) -> tuple[str, str] | None:
        """(node name, address type) of the Node that has address ``ip``."""
        return self.by_address.get(str(parse_ip(ip)))


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """The valid CIDRs of ``texts`` (a malformed one in the cluster is skipped)."""
    out: list[Network] = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return tuple(out)


def _collapse(nets: tuple[Network, ...]) -> tuple[Network, ...]:
    """Adjacent networks merged (one Pod network per Node: thousands become a few)."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _in_networks(ip: str, nets: Iterable[Network]) -> Network | None:
    address = parse_ip(ip)
    for net in nets:
        if address.version == net.version and address in net:
            return net
    return None


def cluster_address_problems(
    field_: str, plan: Mapping[str, str], cluster: ClusterNetworks, reinstall: bool
) -> list[str]:
    """One message per address of ``plan`` (name -> IP) that is the cluster's own: in
    a Service or Pod network, or (for an add task) a Node's address. ``field_`` is
    the field the addresses were given in."""
    problems: list[str] = []
    for name, ip in plan.items():
        where = f"{field_}[{name}]" if reinstall else field_
        if (net := _in_networks(ip, cluster.service_cidrs)) is not None:
            problems.append(
                f"{where}: {ip} is in the cluster's Service network {net}, not a machine; "
                "give the machine's own address"
            )
        elif (net := _in_networks(ip, cluster.pod_cidrs)) is not None:
            problems.append(
                f"{where}: {ip} is in the cluster's Pod network {net}, not a machine; "
                "give the machine's own address"
            )
        elif not reinstall and (node := cluster.node_at(ip)) is not None:
            problems.append(
                f"{where}: {ip} is already the {node[1]} of Node {node[0]}; an add task "
                f"installs new machines: to reinstall that node, name it "
                f"(nodeNamesOverride {{{node[0]}: {ip}}}, penetrator reinstall {node[0]}={ip})"
            )
    return problems


def replaced_nodes(plan: Mapping[str, str], cluster: ClusterNetworks) -> dict[str, str]:
    """Existing Node -> why a reinstall ``plan`` (name -> IP) replaces it: a Node of a
    planned name (reinstalled under it), or the Node at a planned address under
    another name (renamed: the old Node goes)."""
    out: dict[str, str] = {}
    for name, ip in plan.items():
        if name in cluster.nodes:
            out[name] = f"reinstalled as {name}"
        node = cluster.node_at(ip)
        if node is not None and node[0] != name:
            out.setdefault(node[0], f"its address {ip} is renamed to {name}")
    return out


def control_plane_problems(
    field_: str, replaced: Mapping[str, str], cluster: ClusterNetworks, allowed: bool
) -> list[str]:
    """A control-plane Node among ``replaced`` (node -> why) is refused unless
    ``allowed`` (the setting ``webhook.allowControlPlaneNodes``)."""
    if allowed:
        return []
    return [
        f"{field_}: Node {node} is a control-plane node ({why}); penetrator does not "
        "replace control-plane nodes unless the operator's setting "
        "webhook.allowControlPlaneNodes is true; leave it out"
        for node, why in sorted(replaced.items())
        if node in cluster.nodes and cluster.nodes[node].control_plane
    ]
