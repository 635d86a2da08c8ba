"""`up`, `status`, `down`, faults and arches of a sandbox: all derived from the
topology (topology.py) and the recorded state (state.py).

Library use::

    from penetrator_dev.sandbox import Sandbox, SandboxSpec
    sb = Sandbox.up(SandboxSpec(name="t1", machines=3, intranets=2))
    sb.exec_in(sb.topology.proxy_namespace(1), ["true"])
    sb.fault(1, "10.10.1.2", Fault.REFUSE)
    print(sb.status()["cloud"]["forward"]["port"])
    sb.down()            # or down("t1"): also after kill -9 of everything
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from penetrator_dev.sandbox import faults as faults_mod
from penetrator_dev.sandbox import kubeletnode, preflight, realjoin
from penetrator_dev.sandbox import machines as mach
from penetrator_dev.sandbox import network as net
from penetrator_dev.sandbox.forward import ROLE_FORWARD, start_forwarder
from penetrator_dev.sandbox.state import (
    ProcessRecord,
    State,
    is_alive,
    kill_pids,
    load_state,
    locked,
    machine_state_dir,
    process_exists,
    processes_with_arg_prefix,
    processes_with_marker,
    save_state,
    spec_to_dict,
    start_ticks,
    state_dir,
)
from penetrator_dev.sandbox.topology import (
    ARCHES,
    SSH_PORT,
    Fault,
    SandboxSpec,
    Topology,
    build_topology,
    ns_prefix,
)

NETNS_DIR = Path("/run/netns")


class SandboxError(RuntimeError):
    pass


@dataclass
class DownReport:
    killed: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    state_removed: bool = False


def exec_in(
    namespace: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside a network namespace (ip netns exec) and wait for it."""
    return net.exec_in(namespace, argv, input=input, timeout=timeout, check=check)


def popen_in(
    namespace: str, argv: Sequence[str], *, log: Path | None = None, **kw: Any
) -> subprocess.Popen[bytes]:
    """Start argv inside a network namespace without waiting (own session;
    stdout/stderr appended to `log` if given). `down` stops it with the
    namespace."""
    if log is None:
        return subprocess.Popen(net.exec_argv(namespace, argv), start_new_session=True, **kw)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        return subprocess.Popen(
            net.exec_argv(namespace, argv),
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
            start_new_session=True,
            **kw,
        )


class Sandbox:
    """A running (or recorded) sandbox."""

    def __init__(self, name: str, state: State) -> None:
        self.name = name
        self.state = state
        self.topology: Topology = build_topology(state.sandbox_spec())

    # ----------------------------------------------------------- factories
    @classmethod
    def load(cls, name: str = "pn") -> Sandbox:
        st = load_state(name)
        if st is None:
            raise SandboxError(f"sandbox {name!r} is not up (no {state_dir(name)}/state.json)")
        return cls(name, st)

    @classmethod
    def up(
        cls,
        spec: SandboxSpec,
        faults: dict[tuple[int, str], Fault] | None = None,
        arches: dict[tuple[int, str], str] | None = None,
    ) -> Sandbox:
        """Bring the sandbox up (idempotent: an identical healthy sandbox is
        kept; leftovers of a crashed one are removed first)."""
        preflight.check()
        topo = build_topology(spec)
        name = spec.name
        with locked(name):
            st = load_state(name)
            if st is not None:
                try:
                    healthy = _healthy(build_topology(st.sandbox_spec()), st)
                except (ValueError, TypeError):
                    healthy = False
                if healthy and st.spec == spec_to_dict(spec):
                    for (k, ip), f in (faults or {}).items():
                        faults_mod.set_fault(name, topo, st, k, ip, f)
                    save_state(name, st)
                    return cls(name, st)
                if healthy:
                    raise SandboxError(
                        f"sandbox {name!r} is up with another spec; "
                        f"run `penetrator-dev sandbox down --name {name}` first"
                    )
            _down_unlocked(name)
            return cls._create(topo, faults or {}, arches or {})

    @classmethod
    def _create(
        cls,
        topo: Topology,
        faults: dict[tuple[int, str], Fault],
        arches: dict[tuple[int, str], str],
    ) -> Sandbox:
        name = topo.name
        st = State(spec=spec_to_dict(topo.spec), created=time.time())
        for (k, ip), a in arches.items():
            if a not in ARCHES:
                raise SandboxError(f"arch must be one of {ARCHES}")
            st.arches[topo.machine(k, ip).key] = a
        save_state(name, st)  # from here on, `down` knows what to remove
        try:
            _build_network(topo)
            mach.write_credentials(name)
            mach.prepare_machine_dirs(name, topo, st.arches)
            _write_known_hosts(name, topo)
            started = []
            for it in topo.intranets:
                for h in it.hosts:
                    rec = mach.start_sshd(name, it, h, mach.ROLE_MAIN)
                    st.processes.append(rec)
                    started.append((rec, SSH_PORT))
            save_state(name, st)
            mach.wait_listening(started, timeout=120, log_dir=state_dir(name) / "logs")
            if topo.spec.real_join:
                st.processes += realjoin.start_real_join(name, topo, topo.spec.real_join)
                save_state(name, st)
            rec, port = start_forwarder(
                name,
                topo.cloud.namespace,
                topo.cloud.address,
                topo.cloud.apiserver_port,
                topo.spec.forward_port,
            )
            st.processes.append(rec)
            st.forward_port = port
            save_state(name, st)
            for (k, ip), f in faults.items():
                faults_mod.set_fault(name, topo, st, k, ip, f)
            save_state(name, st)
        except BaseException:
            _down_unlocked(name)
            raise
        return cls(name, st)

    # ----------------------------------------------------------- queries
    def namespace(self, target: str, intranet: int = 1) -> str:
        return self.topology.resolve_namespace(target, intranet)

    def exec_in(
        self, target: str, argv: Sequence[str], intranet: int = 1, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return exec_in(self.namespace(target, intranet), argv, **kw)

    def spawn(
        self, target: str, argv: Sequence[str], role: str, intranet: int = 1
    ) -> ProcessRecord:
        """Start a long-lived process inside TARGET (cloud, proxy-K, a machine
        IP...), logging to state_dir/logs/<role>.log, and record it so that
        `status` lists it and `down` stops it."""
        ns = self.namespace(target, intranet)
        p = popen_in(ns, argv, log=state_dir(self.name) / "logs" / f"{role}.log")
        rec = ProcessRecord(role, ns, p.pid, start_ticks(p.pid) or 0)
        with locked(self.name):
            st = load_state(self.name) or self.state
            st.processes.append(rec)
            save_state(self.name, st)
            self.state = st
        return rec

    def machine_dir(self, intranet: int, ip: str) -> Path:
        self.topology.machine(intranet, ip)
        return machine_state_dir(self.name, intranet, ip)

    @property
    def credentials(self) -> mach.Credentials:
        return mach.credentials(self.name)

    @property
    def forward_port(self) -> int:
        return self.state.forward_port

    def status(self) -> dict[str, Any]:
        return status_of(self.name, self.topology, self.state)

    # ----------------------------------------------------------- changes
    def fault(self, intranet: int, ip: str, fault: Fault | None) -> None:
        """Put machine (intranet, ip) into `fault` (None: clear it)."""
        with locked(self.name):
            st = load_state(self.name) or self.state
            faults_mod.set_fault(self.name, self.topology, st, intranet, ip, fault)
            save_state(self.name, st)
            self.state = st

    def set_arch(self, intranet: int, ip: str, arch: str) -> None:
        if arch not in ARCHES:
            raise SandboxError(f"arch must be one of {ARCHES}")
        with locked(self.name):
            st = load_state(self.name) or self.state
            m = self.topology.machine(intranet, ip)
            st.arches[m.key] = arch
            mach.write_machine_dir(self.name, m, arch)
            save_state(self.name, st)
            self.state = st

    def down(self) -> DownReport:
        return down(self.name)


# ----------------------------------------------------------------- helpers


CORE_ROLES = (mach.ROLE_MAIN, ROLE_FORWARD)


def _healthy(topo: Topology, st: State) -> bool:
    """All namespaces there, the main sshds and the forwarder alive (helpers
    and spawned processes may come and go)."""
    have = set(net.list_namespaces())
    core = [p for p in st.processes if p.role in CORE_ROLES]
    return set(topo.namespaces()) <= have and bool(core) and all(is_alive(p) for p in core)


def _build_network(topo: Topology) -> None:
    net.ip_batch(None, [f"netns add {ns}" for ns in topo.namespaces()])
    net.ip_batch(topo.cloud.namespace, net.cloud_batch(topo))
    sysctls = {
        topo.cloud.namespace: {"net.ipv4.ip_forward": "0"},
    }
    for it in topo.intranets:
        net.ip_batch(it.router_ns, net.router_batch(topo, it))
        sysctls[it.router_ns] = {
            "net.ipv4.ip_forward": "1",
            "net.bridge.bridge-nf-call-iptables": "0",
        }
    jobs: list[tuple[str, list[str]]] = []
    for it in topo.intranets:
        jobs.append((it.proxy_ns, net.proxy_batch(it)))
        jobs += [(h.namespace, net.host_batch(it, h)) for h in it.hosts]
    with ThreadPoolExecutor(max_workers=8) as ex:
        list(ex.map(lambda j: net.ip_batch(j[0], j[1]), jobs))
    for ns, kv in sysctls.items():
        net.exec_in(ns, net.sysctl_script(kv))
    for it in topo.intranets:
        net.nft_load(it.router_ns, net.router_ruleset(it))


def _write_known_hosts(name: str, topo: Topology) -> None:
    for it in topo.intranets:
        lines = []
        for h in it.hosts:
            pub = mach.ensure_host_key(name, h.namespace, mach.ROLE_MAIN)
            keytype, key = pub.split()[:2]
            lines += [f"{a} {keytype} {key}\n" for a in h.addresses]
        mach._write(mach.known_hosts_file(name, it.index), "".join(lines))


def status_of(name: str, topo: Topology, st: State) -> dict[str, Any]:
    creds = mach.credentials(name)
    fwd = next((p for p in st.processes if p.role == ROLE_FORWARD), None)
    return {
        "name": name,
        "state_dir": str(state_dir(name)),
        "up": _healthy(topo, st),
        "layout": topo.spec.resolved_layout().value,
        "spec": st.spec,
        "namespaces": topo.namespaces(),
        "cloud": {
            "namespace": topo.cloud.namespace,
            "address": topo.cloud.address,
            "apiserver": {"address": topo.cloud.address, "port": topo.cloud.apiserver_port},
            "forward": {
                "host": "127.0.0.1",
                "port": st.forward_port,
                "pid": fwd.pid if fwd else None,
                "to": f"{topo.cloud.address}:{topo.cloud.apiserver_port}",
            },
        },
        "intranets": [
            {
                "index": it.index,
                "routed": it.routed,
                "cidr": it.cidr,
                "router": {
                    "namespace": it.router_ns,
                    "wan_address": it.router_wan,
                    "gateway": it.gateway,
                },
                "proxy": {"namespace": it.proxy_ns, "address": it.proxy_ip},
                "machine_namespaces": [h.namespace for h in it.hosts],
                "machines": len(it.machines),
                "known_hosts": str(mach.known_hosts_file(name, it.index)),
            }
            for it in topo.intranets
        ],
        "machines": [
            {
                "intranet": m.intranet,
                "ip": m.ip,
                "layout": topo.spec.resolved_layout().value,
                "namespace": m.namespace,
                "fault": st.faults.get(m.key),
                "arch": st.arches.get(m.key, m.arch),
                "state_dir": str(machine_state_dir(name, m.intranet, m.ip)),
            }
            for m in topo.machines()
        ],
        "ssh": {
            "port": SSH_PORT,
            "user": "root",
            "password_file": str(creds.password_file),
            "private_key": str(creds.private_key),
            "public_key": str(creds.public_key),
            "known_hosts": {
                str(it.index): str(mach.known_hosts_file(name, it.index)) for it in topo.intranets
            },
        },
        "processes": [
            {"role": p.role, "namespace": p.namespace, "pid": p.pid, "alive": is_alive(p)}
            for p in st.processes
        ],
    }


def leftover_namespaces(name: str) -> list[str]:
    prefix = ns_prefix(name)
    found = {ns for ns in net.list_namespaces() if ns.startswith(prefix)}
    if NETNS_DIR.is_dir():
        found |= {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}
    return sorted(found)


def leftover_mounts(name: str) -> list[str]:
    """Mount points of ours still in the host's mount table (/run/netns/<name>-*
    and anything under the state directory)."""
    prefixes = (str(NETNS_DIR / ns_prefix(name)), str(state_dir(name)) + "/")
    out: list[str] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        mp = line.split()[4].replace("\\040", " ")
        if mp.startswith(prefixes):
            out.append(mp)
    return out


def leftover_pids(name: str) -> list[int]:
    """Every process of the sandbox: recorded (and still the same process), in
    one of its namespaces, or carrying its marker argument."""
    pids: set[int] = set()
    st = load_state(name)
    if st is not None:
        pids |= {p.pid for p in st.processes if is_alive(p)}
    for ns in leftover_namespaces(name):
        pids |= set(net.namespace_pids(ns))
    # the forwarder lives (listens) in the host namespace: find it by its marker
    pids |= set(processes_with_marker(["penetrator_dev.sandbox.relay", "--sandbox-name", name]))
    # an sshd whose namespace is gone already (ours by its config path)
    pids |= set(processes_with_arg_prefix(str(state_dir(name)) + "/", program="sshd"))
    # pods of real nodes with a network namespace of their own: in the nodes' cgroups
    pids |= set(kubeletnode.cgroup_pids(name))
    return sorted(p for p in pids if process_exists(p))  # zombies hold nothing


def down(name: str = "pn") -> DownReport:
    """Remove every namespace, link, rule, mount and process of the sandbox;
    works from the state file and, without it, from the name prefix."""
    with locked(name):
        rep = _down_unlocked(name)
    remove_state_dir(name)
    return rep


def _down_unlocked(name: str) -> DownReport:
    rep = DownReport()
    rep.killed += kubeletnode.kill_cgroup_processes(name)  # pods: in no namespace of ours
    for _ in range(3):  # a process may fork while we kill; bounded retries
        pids = leftover_pids(name)
        if not pids:
            break
        kill_pids(pids)
        rep.killed += pids
    kubeletnode.cleanup(name)  # cgroups, host sysctls, bind targets: once nothing runs
    namespaces = leftover_namespaces(name)
    if namespaces:
        net.run(
            ["ip", "-force", "-batch", "-"],
            input="".join(f"netns del {ns}\n" for ns in namespaces),
            check=False,
        )
        rep.namespaces = namespaces
    for mp in leftover_mounts(name):
        net.run(["umount", "-l", mp], check=False)
        rep.unmounted.append(mp)
    for ns in namespaces:
        with contextlib.suppress(OSError):
            (NETNS_DIR / ns).unlink()
    d = state_dir(name)
    if d.exists():
        # keep the lock file while we hold it; remove everything else
        for child in d.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        rep.state_removed = True
    return rep


def remove_state_dir(name: str) -> None:
    """After down: remove the (then empty but for its lock) state directory."""
    d = state_dir(name)
    if d.exists() and all(c.name == "lock" for c in d.iterdir()):
        shutil.rmtree(d, ignore_errors=True)
