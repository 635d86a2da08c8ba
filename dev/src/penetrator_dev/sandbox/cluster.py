"""The sandbox's cluster: the real control plane in the cloud namespace, and real
nodes (containerd + kubelet each, realnode.py): the control-plane node and each
intranet's proxy node.

Edge machines reach the apiserver at the cloud address through their router's
NAT, as in the article; the host reaches it through the sandbox's forwarder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from penetrator_dev.sandbox import kubeletnode, realnode
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.lifecycle import Sandbox, SandboxError
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
ROLE_PREFIX = "cluster-"


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
    control_plane_node: str
    proxy_nodes: dict[int, str]

    def pod_log(self, pod: str, namespace: str = "default") -> Path | None:
        logs = sorted(self.pod_logs(namespace, pod), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None

    def pod_logs(self, namespace: str = "*", pod: str = "*") -> list[Path]:
        """The log files of every pod (also deleted ones) whose namespace and name
        match these glob patterns, on whichever nodes ran them."""
        # <node>/private/var_log_pods/<ns>_<pod>_<uid>/<container>/<restart>.log
        pattern = f"*/private/var_log_pods/{namespace}_{pod}_*/*/*.log"
        return sorted(realnode.nodes_dir(self.name).glob(pattern))

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


def _cluster_info(sb: Sandbox, cp_state: ControlPlaneState, binaries_dir: Path) -> SandboxCluster:
    d = cluster_dir(sb.name)
    return SandboxCluster(
        name=sb.name,
        kubeconfig=d / "host.kubeconfig",
        in_cloud_kubeconfig=Path(cp_state.kubeconfig),
        server=cp_state.server,
        ca_cert=d / "controlplane" / "pki" / "ca.crt",
        ca_cert_hash=ca_cert_hash((d / "controlplane" / "pki" / "ca.crt").read_bytes()),
        kubectl_binary=binaries_dir / "kubectl",
        control_plane_node=CONTROL_PLANE_NODE,
        proxy_nodes={it.index: proxy_node_name(it.index) for it in sb.topology.intranets},
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
    node_roles = [p for p in sb.state.processes if p.role in realnode.ROLES]
    cp_roles = [p for p in sb.state.processes if p.role.startswith(ROLE_PREFIX)]
    if not node_roles or not cp_roles or not all(is_alive(p) for p in node_roles + cp_roles):
        return None
    return _cluster_info(sb, cp_state, binaries_dir)


def start_cluster(sb: Sandbox, ready_timeout_s: float = 120.0) -> SandboxCluster:
    """Start (or find running) the control plane and its nodes, a containerd and a
    kubelet per node. Idempotent."""
    running = load_cluster(sb)
    if running:
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
    (d / "cluster.json").write_text(json.dumps({"binaries": str(cp.binaries.directory)}))

    # The host's kubeconfig goes through the forwarder (127.0.0.1 is in the cert).
    admin_crt, admin_key = cp.pki.client("admin")
    write_kubeconfig(
        d / "host.kubeconfig",
        f"https://127.0.0.1:{sb.forward_port}",
        cp.pki.ca_crt,
        admin_crt,
        admin_key,
    )

    nodes = [
        realnode.RealNode(
            CONTROL_PLANE_NODE, topo.cloud.address, topo.cloud.namespace, 0, (CONTROL_PLANE_TAINT,)
        )
    ]
    for it in topo.intranets:
        nodes.append(
            realnode.RealNode(proxy_node_name(it.index), it.proxy_ip, it.proxy_ns, len(nodes), ())
        )
    _start_real_nodes(sb, cp, nodes)
    _wait_ready(cp, [n.name for n in nodes], ready_timeout_s)
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


def _start_real_nodes(sb: Sandbox, cp: ControlPlane, nodes: list[realnode.RealNode]) -> None:
    """A containerd + kubelet per node (realnode.py), each with a node identity issued
    by the cluster CA, the project's image and the pause image imported."""
    topo = sb.topology
    kubeletnode.save_host_state(sb.name, realnode.PRIVATE_PATHS)
    images = [(realnode.project_image(), "docker.io/library/penetrator")]
    for node in nodes:
        cert, key = _node_identity(cluster_dir(sb.name), cp, node.name)
        kubeconfig = cluster_dir(sb.name) / "nodes" / f"{node.name}.kubeconfig"
        write_kubeconfig(kubeconfig, cp.server, cp.pki.ca_crt, cert, key)
        realnode.write_node_files(sb.name, node, cp.pki.ca_crt, kubeconfig)
        records = realnode.start_node(
            sb.name,
            node,
            kubelet=cp.binaries.directory / "kubelet",
            images=images,
            apiserver=(topo.cloud.address, topo.cloud.apiserver_port),
        )
        with locked(sb.name):
            st = load_state(sb.name) or sb.state
            st.processes += records
            save_state(sb.name, st)
            sb.state = st


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


def _node_identity(d: Path, cp: ControlPlane, name: str) -> tuple[Path, Path]:
    """A node's client certificate and key (system:node:<name>) issued by the cluster
    CA, as kubeadm does for the control plane's kubelet."""
    ca = CertificateAuthority.load(cp.pki.ca_crt, cp.pki.ca_key)
    crt, key = ca.issue_node_client(name)
    nodes = d / "nodes"
    nodes.mkdir(exist_ok=True, mode=0o700)
    (nodes / f"{name}.crt").write_bytes(crt)
    write_private(nodes / f"{name}.key", key)
    return nodes / f"{name}.crt", nodes / f"{name}.key"


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
