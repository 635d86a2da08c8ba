"""The sandbox's cluster: the real control plane in the cloud namespace, and the
node agent that registers the control-plane node and each intranet's proxy node.

Edge machines reach the apiserver at the cloud address through their router's
NAT, as in the article; the host reaches it through the sandbox's forwarder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.lifecycle import Sandbox, SandboxError
from penetrator_dev.sandbox.nodeagent.agent import AgentConfig, AgentNode, pod_log_path
from penetrator_dev.sandbox.state import (
    ProcessRecord,
    is_alive,
    load_state,
    locked,
    save_state,
    start_ticks,
    state_dir,
)
from penetrator_dev.testenv.controlplane import (
    ControlPlane,
    ControlPlaneOptions,
    ControlPlaneState,
    restart_component,
)
from penetrator_dev.testenv.kubeconfig import write_kubeconfig
from penetrator_dev.testenv.pki import CertificateAuthority, ca_cert_hash, write_private

CONTROL_PLANE_NODE = "control-plane"
CONTROL_PLANE_TAINT = {
    "key": "node-role.kubernetes.io/control-plane",
    "effect": "NoSchedule",
}
ROLE_NODE_AGENT = "node-agent"
ROLE_PREFIX = "cluster-"
# What runs the sandbox's nodes: "agent" (the node agent, pods as host processes) or
# "real" (containerd + kubelet per node, realnode.py). PENETRATOR_SANDBOX_NODES
# chooses it when the caller does not.
NODE_KINDS = ("agent", "real")
NODES_ENV = "PENETRATOR_SANDBOX_NODES"


def default_nodes() -> str:
    kind = os.environ.get(NODES_ENV, "agent")
    if kind not in NODE_KINDS:
        raise SandboxError(f"{NODES_ENV}={kind!r}: must be one of {', '.join(NODE_KINDS)}")
    return kind


def proxy_node_name(intranet: int) -> str:
    return f"proxy-{intranet}"


def cluster_dir(name: str) -> Path:
    return state_dir(name) / "cluster"


@dataclass(frozen=True)
class SandboxCluster:
    """What tests and the CLI need to use the sandbox's cluster."""

    name: str
    kubeconfig: Path  # for the host: through the forwarder
    in_cloud_kubeconfig: Path  # for processes inside the cloud namespace
    server: str  # the address edge machines and pods use
    ca_cert: Path
    ca_cert_hash: str
    kubectl_binary: Path
    pods_dir: Path
    control_plane_node: str
    proxy_nodes: dict[int, str]
    nodes: str = "agent"  # NODE_KINDS

    def pod_log(self, pod: str, namespace: str = "default") -> Path | None:
        if self.nodes == "real":
            logs = sorted(self.pod_logs(namespace, pod), key=lambda p: p.stat().st_mtime)
            return logs[-1] if logs else None
        return pod_log_path(str(self.pods_dir), namespace, pod)

    def pod_logs(self, namespace: str = "*", pod: str = "*") -> list[Path]:
        """The log files of every pod (also deleted ones) whose namespace and name
        match these glob patterns, on whichever nodes ran them."""
        if self.nodes == "real":
            # <node>/private/var_log_pods/<ns>_<pod>_<uid>/<container>/<restart>.log
            pattern = f"*/private/var_log_pods/{namespace}_{pod}_*/*/*.log"
            return sorted(realnode.nodes_dir(self.name).glob(pattern))
        return sorted(self.pods_dir.glob(f"{namespace}_{pod}_*/container.log"))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """The Go-built kubectl from the host, through the forwarder, as the admin."""
        proc = subprocess.run(
            [str(self.kubectl_binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise SandboxError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc


def _cluster_info(
    sb: Sandbox, cp_state: ControlPlaneState, binaries_dir: Path, nodes: str
) -> SandboxCluster:
    d = cluster_dir(sb.name)
    return SandboxCluster(
        name=sb.name,
        kubeconfig=d / "host.kubeconfig",
        in_cloud_kubeconfig=Path(cp_state.kubeconfig),
        server=cp_state.server,
        ca_cert=d / "controlplane" / "pki" / "ca.crt",
        ca_cert_hash=ca_cert_hash((d / "controlplane" / "pki" / "ca.crt").read_bytes()),
        kubectl_binary=binaries_dir / "kubectl",
        pods_dir=d / "pods",
        control_plane_node=CONTROL_PLANE_NODE,
        proxy_nodes={it.index: proxy_node_name(it.index) for it in sb.topology.intranets},
        nodes=nodes,
    )


def load_cluster(sb: Sandbox) -> SandboxCluster | None:
    """The sandbox's cluster if it runs, else None."""
    d = cluster_dir(sb.name)
    try:
        cp_state = ControlPlaneState.load(d / "controlplane")
        recorded = json.loads((d / "cluster.json").read_text())
        binaries_dir = Path(recorded["binaries"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
    nodes = recorded.get("nodes", "agent")
    roles = realnode.ROLES if nodes == "real" else (ROLE_NODE_AGENT,)
    agents = [p for p in sb.state.processes if p.role in roles]
    cp_roles = [p for p in sb.state.processes if p.role.startswith(ROLE_PREFIX)]
    if not agents or not cp_roles or not all(is_alive(p) for p in agents + cp_roles):
        return None
    return _cluster_info(sb, cp_state, binaries_dir, nodes)


def start_cluster(
    sb: Sandbox, ready_timeout_s: float = 120.0, nodes: str | None = None
) -> SandboxCluster:
    """Start (or find running) the control plane and its nodes: the node agent, or
    with ``nodes="real"`` a containerd + kubelet per node. Idempotent."""
    nodes = nodes or default_nodes()
    running = load_cluster(sb)
    if running:
        if running.nodes != nodes:
            raise SandboxError(
                f"sandbox {sb.name!r} runs {running.nodes} nodes, not {nodes}; "
                f"run `penetrator-dev sandbox down --name {sb.name}` first"
            )
        return running
    topo = sb.topology
    d = cluster_dir(sb.name)
    d.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(
        ControlPlaneOptions(
            bind_address=topo.cloud.address,
            port=topo.cloud.apiserver_port,
            netns=topo.cloud.namespace,
            workdir=d / "controlplane",
        )
    )
    try:
        cp.start()
    except BaseException:
        cp.stop()
        raise
    # From here on the sandbox owns these processes: `down` stops them.
    _record(sb, [(f"{ROLE_PREFIX}{p.component}", p.pid) for p in cp.state.processes])
    (d / "cluster.json").write_text(
        json.dumps({"binaries": str(cp.binaries.directory), "nodes": nodes})
    )

    # The host's kubeconfig goes through the forwarder (127.0.0.1 is in the cert).
    admin_crt, admin_key = cp.pki.client("admin")
    write_kubeconfig(
        d / "host.kubeconfig",
        f"https://127.0.0.1:{sb.forward_port}",
        cp.pki.ca_crt,
        admin_crt,
        admin_key,
    )

    agent_nodes = [
        _agent_node(
            d,
            cp,
            CONTROL_PLANE_NODE,
            topo.cloud.address,
            topo.cloud.namespace,
            taints=(CONTROL_PLANE_TAINT,),
        )
    ]
    for it in topo.intranets:
        agent_nodes.append(_agent_node(d, cp, proxy_node_name(it.index), it.proxy_ip, it.proxy_ns))
    if nodes == "real":
        _start_real_nodes(sb, cp, agent_nodes)
    else:
        agent = AgentConfig(
            server=cp.server,
            ca=str(cp.pki.ca_crt),
            nodes=tuple(agent_nodes),
            pods_dir=str(d / "pods"),
            service_host=topo.cloud.address,
            service_port=topo.cloud.apiserver_port,
            python=sys.executable,
        )
        (d / "agent.json").write_text(agent.dump())
        _spawn_agent(sb)
    _wait_ready(cp, [n.name for n in agent_nodes], ready_timeout_s)
    # NodeRestriction keeps a kubelet from setting role labels on itself: the admin does.
    cp.kubectl(
        "label", "node", CONTROL_PLANE_NODE, "node-role.kubernetes.io/control-plane=", "--overwrite"
    )
    # Joined edge machines stay Ready through one heartbeat service per intranet.
    hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
    info = load_cluster(Sandbox.load(sb.name))
    if info is None:
        raise SandboxError(
            "the sandbox's cluster did not stay up; see "
            f"{state_dir(sb.name)}/logs and {d}/controlplane/*.log"
        )
    return info


def _start_real_nodes(sb: Sandbox, cp: ControlPlane, nodes: list[AgentNode]) -> None:
    """A containerd + kubelet per node (realnode.py), with the node identities issued
    for the agent, the project's image and the pause image imported into each."""
    topo = sb.topology
    kubeletnode.save_host_state(sb.name, realnode.PRIVATE_PATHS)
    images = [(realnode.project_image(), "docker.io/library/penetrator")]
    for index, n in enumerate(nodes):
        assert n.netns is not None
        rn = realnode.RealNode(n.name, n.ip, n.netns, index, n.taints)
        kubeconfig = cluster_dir(sb.name) / "nodes" / f"{n.name}.kubeconfig"
        write_kubeconfig(kubeconfig, cp.server, cp.pki.ca_crt, Path(n.cert), Path(n.key))
        realnode.write_node_files(sb.name, rn, cp.pki.ca_crt, kubeconfig)
        records = realnode.start_node(
            sb.name,
            rn,
            kubelet=cp.binaries.directory / "kubelet",
            images=images,
            apiserver=(topo.cloud.address, topo.cloud.apiserver_port),
        )
        with locked(sb.name):
            st = load_state(sb.name) or sb.state
            st.processes += records
            save_state(sb.name, st)
            sb.state = st


def _spawn_agent(sb: Sandbox) -> ProcessRecord:
    agent_json = cluster_dir(sb.name) / "agent.json"
    return sb.spawn(
        "cloud",
        [sys.executable, "-m", "penetrator_dev.sandbox.nodeagent", str(agent_json)],
        role=ROLE_NODE_AGENT,
    )


def restart_node_agent(sb: Sandbox, kill_signal: int = signal.SIGKILL) -> ProcessRecord:
    """Stop the node agent (SIGKILL by default: a crash) and start a new one."""
    with locked(sb.name):
        st = load_state(sb.name) or sb.state
        for rec in [p for p in st.processes if p.role == ROLE_NODE_AGENT]:
            if is_alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, kill_signal)
            st.processes.remove(rec)
        save_state(sb.name, st)
        sb.state = st
    return _spawn_agent(sb)


CONTROL_PLANE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def restart_control_plane(
    sb: Sandbox, component: str, kill_signal: int = signal.SIGTERM, ready_timeout_s: float = 300.0
) -> None:
    """Restart one component of the sandbox's control plane (etcd, kube-apiserver,
    ...): ``kill_signal`` to its process, then the same command again; returns once
    the apiserver's /readyz answers ok again (it checks etcd too)."""
    if component not in CONTROL_PLANE_COMPONENTS:
        raise SandboxError(f"component: one of {', '.join(CONTROL_PLANE_COMPONENTS)}")
    workdir = cluster_dir(sb.name) / "controlplane"
    old, new = restart_component(workdir, component, kill_signal)
    with locked(sb.name):
        st = load_state(sb.name) or sb.state
        for rec in st.processes:
            if rec.role == f"{ROLE_PREFIX}{component}" and rec.pid == old.pid:
                rec.pid, rec.start_ticks = new.pid, start_ticks(new.pid) or 0
        save_state(sb.name, st)
        sb.state = st
    cp_state = ControlPlaneState.load(workdir)
    binaries_dir = Path(json.loads((cluster_dir(sb.name) / "cluster.json").read_text())["binaries"])
    kubectl = [str(binaries_dir / "kubectl"), f"--kubeconfig={cp_state.kubeconfig}"]
    deadline = time.monotonic() + ready_timeout_s
    while True:
        p = sb.exec_in(
            "cloud",
            [*kubectl, "get", "--raw=/readyz?verbose", "--request-timeout=5s"],
            check=False,
            timeout=15,
        )
        if p.returncode == 0:
            return
        if time.monotonic() > deadline:
            log = workdir / "kube-apiserver.log"
            tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
            raise SandboxError(
                f"the apiserver is not ready {ready_timeout_s:.0f}s after restarting "
                f"{component}: {p.stdout.strip()[-1500:]} {p.stderr.strip()[-300:]}\n"
                + "\n".join(tail)
            )
        time.sleep(0.5)


def _record(sb: Sandbox, processes: list[tuple[str, int]]) -> None:
    with locked(sb.name):
        st = load_state(sb.name) or sb.state
        for role, pid in processes:
            st.processes.append(
                ProcessRecord(role, sb.topology.cloud.namespace, pid, start_ticks(pid) or 0)
            )
        save_state(sb.name, st)
        sb.state = st


def _agent_node(
    d: Path,
    cp: ControlPlane,
    name: str,
    ip: str,
    netns: str,
    taints: tuple[dict[str, str], ...] = (),
) -> AgentNode:
    """A node identity (system:node:<name>) issued by the cluster CA, as kubeadm does."""
    ca = CertificateAuthority.load(cp.pki.ca_crt, cp.pki.ca_key)
    crt, key = ca.issue_node_client(name)
    nodes = d / "nodes"
    nodes.mkdir(exist_ok=True, mode=0o700)
    (nodes / f"{name}.crt").write_bytes(crt)
    write_private(nodes / f"{name}.key", key)
    return AgentNode(
        name=name,
        ip=ip,
        netns=netns,
        cert=str(nodes / f"{name}.crt"),
        key=str(nodes / f"{name}.key"),
        taints=taints,
    )


def _wait_ready(cp: ControlPlane, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    jsonpath = (
        "{range .items[*]}{.metadata.name}="
        "{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}"
    )
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "nodes", "-o", f"jsonpath={jsonpath}", check=False).stdout
        ready = {line.split("=")[0] for line in out.splitlines() if line.endswith("=True")}
        if set(names) <= ready:
            return
        time.sleep(0.5)
    raise SandboxError(f"nodes {names} not Ready within {timeout_s:.0f}s")
