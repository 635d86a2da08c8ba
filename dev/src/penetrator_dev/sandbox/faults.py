"""Machine faults, each real on the wire:

==============  ==============================================================
down            nft drops every packet to the address: connects time out
refuse          nft answers port 22 with a TCP reset: connection refused
wrong-password  port 22 DNAT'd to a second sshd whose root password differs
                (the sandbox key still opens it)
new-host-key    port 22 DNAT'd to a second sshd with another host key
slow            port 22 DNAT'd to a relay delaying every chunk by
                ``slow_delay_ms`` in each direction
install-fails   the file ``install-fails`` in the machine's state directory
                (``$EDGE_MACHINE_DIR/install-fails`` inside a session)
no-downloader   the file ``no-downloader`` in the machine's state directory:
                edge-shell runs each session in its own mount namespace with
                every curl and wget on PATH covered by /dev/null
==============  ==============================================================

DNAT keeps the destination address, so the session's local address still names
the machine. The helper sshd/relay of a namespace starts on first use.
"""

from __future__ import annotations

import subprocess
import sys

from penetrator_dev.sandbox import machines as mach
from penetrator_dev.sandbox.network import exec_argv, fault_ruleset, nft_load
from penetrator_dev.sandbox.state import (
    ProcessRecord,
    State,
    is_alive,
    start_ticks,
    state_dir,
)
from penetrator_dev.sandbox.topology import (
    SLOW_RELAY_PORT,
    SSH_PORT,
    Fault,
    Intranet,
    MachineHost,
    Topology,
)

ROLE_SLOW = "relay-slow"
HELPER_ROLE: dict[Fault, str] = {
    Fault.WRONG_PASSWORD: mach.ROLE_WRONG_PASSWORD,
    Fault.NEW_HOST_KEY: mach.ROLE_NEW_HOST_KEY,
    Fault.SLOW: ROLE_SLOW,
}
HELPER_PORT: dict[str, int] = {
    mach.ROLE_WRONG_PASSWORD: mach.SSHD_ROLES[mach.ROLE_WRONG_PASSWORD],
    mach.ROLE_NEW_HOST_KEY: mach.SSHD_ROLES[mach.ROLE_NEW_HOST_KEY],
    ROLE_SLOW: SLOW_RELAY_PORT,
}


def parse_fault(text: str) -> Fault | None:
    """A fault name, or None for `clear`."""
    if text == "clear":
        return None
    try:
        return Fault(text)
    except ValueError:
        names = ", ".join([f.value for f in Fault] + ["clear"])
        raise ValueError(f"unknown fault {text!r}; one of {names}") from None


def start_slow_relay(name: str, host: MachineHost, delay_ms: int) -> ProcessRecord:
    log = state_dir(name) / "logs" / f"{host.namespace}-{ROLE_SLOW}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = exec_argv(
        host.namespace,
        [
            sys.executable,
            "-m",
            "penetrator_dev.sandbox.relay",
            "--sandbox-name",
            name,
            "--role",
            ROLE_SLOW,
            "--listen",
            f"0.0.0.0:{SLOW_RELAY_PORT}",
            "--connect-port",
            str(SSH_PORT),
            "--delay-ms",
            str(delay_ms),
        ],
    )
    with open(log, "ab") as logf:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True
        )
    return ProcessRecord(ROLE_SLOW, host.namespace, p.pid, start_ticks(p.pid) or 0)


def _host_of(it: Intranet, namespace: str) -> MachineHost:
    for h in it.hosts:
        if h.namespace == namespace:
            return h
    raise KeyError(namespace)


def apply_namespace(name: str, topo: Topology, st: State, intranet: int, namespace: str) -> None:
    """Make the faults of every machine in `namespace` real: helpers running,
    nft table loaded. Updates st.processes."""
    it = topo.intranet(intranet)
    host = _host_of(it, namespace)
    faults: dict[str, Fault] = {}
    for ip in host.addresses:
        f = st.faults.get(f"{intranet}/{ip}")
        if f:
            faults[ip] = Fault(f)
    needed = {HELPER_ROLE[f] for f in faults.values() if f in HELPER_ROLE}
    running = {p.role for p in st.processes if p.namespace == namespace and is_alive(p)}
    started: list[tuple[ProcessRecord, int]] = []
    for role in sorted(needed - running):
        if role == ROLE_SLOW:
            rec = start_slow_relay(name, host, topo.spec.slow_delay_ms)
        else:
            rec = mach.start_sshd(name, it, host, role)
        st.processes = [
            p for p in st.processes if not (p.namespace == namespace and p.role == role)
        ]
        st.processes.append(rec)
        started.append((rec, HELPER_PORT[role]))
    mach.wait_listening(started, timeout=30, log_dir=state_dir(name) / "logs")
    nft_load(namespace, fault_ruleset(faults))


def set_fault(
    name: str, topo: Topology, st: State, intranet: int, ip: str, fault: Fault | None
) -> None:
    m = topo.machine(intranet, ip)
    key = m.key
    if fault is None:
        st.faults.pop(key, None)
    else:
        st.faults[key] = fault.value
    mach.set_install_fails(name, m, fault is Fault.INSTALL_FAILS)
    mach.set_no_downloader(name, m, fault is Fault.NO_DOWNLOADER)
    apply_namespace(name, topo, st, intranet, m.namespace)
