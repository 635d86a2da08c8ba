"""iproute2 and nftables for the sandbox: pure generators of batch files and
rulesets from the topology, and the few functions that run them.

Interfaces are created directly inside the namespaces (``ip -n A link add X type
veth peer name Y netns B``), so the host's namespace never holds a sandbox
interface, not even for a moment.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from penetrator_dev.sandbox.topology import (
    FAULT_PORTS,
    NEW_HOST_KEY_PORT,
    SLOW_RELAY_PORT,
    SSH_PORT,
    WRONG_PASSWORD_PORT,
    Fault,
    Intranet,
    MachineHost,
    Topology,
)

ROUTER_TABLE = "pnrouter"
FAULT_TABLE = "pnfault"


class CommandError(RuntimeError):
    pass


def run(
    argv: Sequence[str], *, input: str | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command, raising CommandError (with its stderr) when it fails."""
    try:
        cp = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"{' '.join(argv)}: timed out after {timeout}s") from e
    if check and cp.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside network namespace `namespace`."""
    return ["ip", "netns", "exec", namespace, *argv]


def exec_in(
    namespace: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside a network namespace and wait for it."""
    return run(exec_argv(namespace, argv), input=input, timeout=timeout, check=check)


def ip_batch(namespace: str | None, lines: Sequence[str]) -> None:
    if not lines:
        return
    argv = ["ip", "-batch", "-"] if namespace is None else ["ip", "-n", namespace, "-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def nft_load(namespace: str, ruleset: str) -> None:
    exec_in(namespace, ["nft", "-f", "-"], input=ruleset)


def list_namespaces() -> list[str]:
    cp = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    cp = run(["ip", "netns", "pids", namespace], check=False)
    return [int(x) for x in cp.stdout.split() if x.isdigit()]


# ---------------------------------------------------------------- pure parts


def mac(intranet: int, host: int, last: int = 0) -> str:
    """Deterministic locally administered MAC addresses."""
    return f"02:00:{intranet:02x}:{(host >> 8) & 0xFF:02x}:{host & 0xFF:02x}:{last:02x}"


def host_mac(intranet: int, host_index: int) -> str:
    return mac(intranet, host_index, 0x10)


def host_index(host: MachineHost) -> int:
    return int(host.port[1:])


def cloud_batch(topo: Topology) -> list[str]:
    c = topo.cloud
    lines = [
        "link set lo up",
        f"link add {c.bridge} type bridge",
        f"addr add {c.address}/{c.cidr.split('/')[1]} dev {c.bridge}",
        f"link set {c.bridge} up",
    ]
    for it in topo.intranets:
        lines += [
            f"link add {it.cloud_port} type veth peer name wan netns {it.router_ns}",
            f"link set {it.cloud_port} master {c.bridge} up",
        ]
    for it in topo.intranets:
        if it.routed:
            lines.append(f"route add {it.cidr} via {it.router_wan}")
    return lines


def router_batch(topo: Topology, it: Intranet) -> list[str]:
    plen = topo.cloud.cidr.split("/")[1]
    lines = [
        "link set lo up",
        f"addr add {it.router_wan}/{plen} dev wan",
        "link set wan up",
        f"link add lan address {mac(it.index, 0, 1)} type bridge",
        f"addr add {it.gateway}/{it.prefixlen} dev lan",
        "link set lan up",
        f"link add p0 type veth peer name eth0 netns {it.proxy_ns} address {mac(it.index, 0, 2)}",
        "link set p0 master lan up",
    ]
    for h in it.hosts:
        hi = host_index(h)
        lines += [
            f"link add {h.port} type veth peer name eth0 netns {h.namespace} "
            f"address {host_mac(it.index, hi)}",
            f"link set {h.port} master lan up",
        ]
    # permanent neighbours: a thousand ARP entries would overflow the kernel's
    # neighbour table (gc_thresh3 is global); permanent ones are not counted.
    lines += [f"neigh replace {it.proxy_ip} lladdr {mac(it.index, 0, 2)} dev lan nud permanent"]
    lines += _neighbours(it, "lan")
    return lines


def _neighbours(it: Intranet, dev: str) -> list[str]:
    out = []
    for h in it.hosts:
        m = host_mac(it.index, host_index(h))
        out += [f"neigh replace {a} lladdr {m} dev {dev} nud permanent" for a in h.addresses]
    return out


def proxy_batch(it: Intranet) -> list[str]:
    return [
        "link set lo up",
        f"addr add {it.proxy_ip}/{it.prefixlen} dev eth0",
        "link set eth0 up",
        f"route add default via {it.gateway}",
        f"neigh replace {it.gateway} lladdr {mac(it.index, 0, 1)} dev eth0 nud permanent",
        *_neighbours(it, "eth0"),
    ]


def host_batch(it: Intranet, h: MachineHost) -> list[str]:
    lines = ["link set lo up"]
    lines += [f"addr add {a}/{h.prefixlen} dev eth0" for a in h.addresses]
    lines += [
        "link set eth0 up",
        f"route add default via {it.gateway}",
        f"neigh replace {it.gateway} lladdr {mac(it.index, 0, 1)} dev eth0 nud permanent",
        f"neigh replace {it.proxy_ip} lladdr {mac(it.index, 0, 2)} dev eth0 nud permanent",
    ]
    return lines


def router_ruleset(it: Intranet) -> str:
    """NAT (masquerade) towards the cloud, nothing new from the cloud inwards,
    except for a routed intranet."""
    nat = "" if it.routed else f'        oifname "wan" ip saddr {it.cidr} masquerade\n'
    inbound = '        iifname "wan" oifname "lan" accept\n' if it.routed else ""
    return (
        f"table ip {ROUTER_TABLE} {{\n"
        "    chain nat_post {\n"
        "        type nat hook postrouting priority 100; policy accept;\n"
        f"{nat}"
        "    }\n"
        "    chain filter_fwd {\n"
        "        type filter hook forward priority 0; policy drop;\n"
        "        ct state established,related accept\n"
        '        iifname "lan" oifname "lan" accept\n'
        '        iifname "lan" oifname "wan" accept\n'
        f"{inbound}"
        "    }\n"
        "}\n"
    )


FAULT_DNAT_PORT: dict[Fault, int] = {
    Fault.WRONG_PASSWORD: WRONG_PASSWORD_PORT,
    Fault.NEW_HOST_KEY: NEW_HOST_KEY_PORT,
    Fault.SLOW: SLOW_RELAY_PORT,
}


def fault_ruleset(faults: dict[str, Fault]) -> str:
    """The fault table of one machine namespace, from {ip: fault} of its machines.

    down: drop everything to the address; refuse: TCP reset on port 22;
    wrong-password / new-host-key / slow: port 22 DNAT'd (address kept) to the
    helper sshd or relay. The helper ports are closed to direct connections."""
    pre: list[str] = []
    inp: list[str] = []
    for ip, f in sorted(faults.items()):
        if f is Fault.DOWN:
            inp.append(f"ip daddr {ip} drop")
        elif f is Fault.REFUSE:
            inp.append(f"ip daddr {ip} tcp dport {SSH_PORT} reject with tcp reset")
        elif f in FAULT_DNAT_PORT:
            pre.append(f"ip daddr {ip} tcp dport {SSH_PORT} dnat to {ip}:{FAULT_DNAT_PORT[f]}")
    ports = ", ".join(str(p) for p in FAULT_PORTS)
    inp.append(f"tcp dport {{ {ports} }} ct status dnat accept")
    inp.append(f'iifname != "lo" tcp dport {{ {ports} }} reject with tcp reset')
    body_pre = "".join(f"        {r}\n" for r in pre)
    body_in = "".join(f"        {r}\n" for r in inp)
    return (
        f"table inet {FAULT_TABLE}\n"
        f"delete table inet {FAULT_TABLE}\n"
        f"table inet {FAULT_TABLE} {{\n"
        "    chain nat_pre {\n"
        "        type nat hook prerouting priority -100; policy accept;\n"
        f"{body_pre}"
        "    }\n"
        "    chain filter_in {\n"
        "        type filter hook input priority 0; policy accept;\n"
        f"{body_in}"
        "    }\n"
        "}\n"
    )


def sysctl_script(pairs: dict[str, str]) -> list[str]:
    """argv of a shell writing /proc/sys entries (run inside a namespace)."""
    cmds = [
        f"echo {v} > /proc/sys/{k.replace('.', '/')} 2>/dev/null || true" for k, v in pairs.items()
    ]
    return ["sh", "-c", "; ".join(cmds)]
