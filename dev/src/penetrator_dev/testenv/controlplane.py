"""A real Kubernetes control plane for tests: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built from the official modules.

Like controller-runtime's envtest it runs the real binaries; unlike envtest it
also runs the controller manager and the scheduler, because the operator
relies on garbage collection, Jobs, CSR signing and scheduling.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from penetrator_dev.testenv import bootstrap
from penetrator_dev.testenv.binaries import Binaries, find_binaries
from penetrator_dev.testenv.kubeconfig import write_kubeconfig
from penetrator_dev.testenv.pki import ControlPlanePKI, ca_cert_hash

SERVICE_CIDR = "10.96.0.0/12"
KUBERNETES_SERVICE_IP = "10.96.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
STATE_FILE = "controlplane.json"


class ControlPlaneError(RuntimeError):
    pass


@dataclass(frozen=True)
class ControlPlaneOptions:
    """How to run one control plane. Several can run at once on different ports."""

    bind_address: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    extra_server_names: tuple[str, ...] = ()
    netns: str | None = None  # run every component inside this network namespace
    workdir: Path | None = None  # default: a fresh temp dir
    # Short, so a machine that stops heartbeating goes NotReady within seconds.
    node_monitor_grace_period: str = "20s"
    die_with_parent: bool = False  # tie the processes to this one (pytest fixtures)
    ready_timeout_s: float = 60.0


@dataclass
class ProcessRecord:
    component: str
    pid: int
    binary: str


@dataclass
class ControlPlaneState:
    workdir: str
    server: str
    kubeconfig: str
    netns: str | None
    processes: list[ProcessRecord] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.workdir) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlaneState:
        raw = json.loads((workdir / STATE_FILE).read_text())
        raw["processes"] = [ProcessRecord(**p) for p in raw["processes"]]
        return cls(**raw)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the test process dies, so do the components.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


class ControlPlane:
    """Start with `start()` (or as a context manager); `stop()` leaves no process."""

    def __init__(
        self, options: ControlPlaneOptions | None = None, binaries: Binaries | None = None
    ):
        self.options = options or ControlPlaneOptions()
        self.binaries = binaries or find_binaries()
        self._own_workdir = self.options.workdir is None
        self.workdir = self.options.workdir or Path(tempfile.mkdtemp(prefix="penetrator-testenv-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.port = self.options.port or _free_port()
        self.server = f"https://{_url_host(self.options.bind_address)}:{self.port}"
        self.pki = ControlPlanePKI(self.workdir / "pki")
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._children: list[subprocess.Popen[bytes]] = []
        self.state = ControlPlaneState(
            workdir=str(self.workdir),
            server=self.server,
            kubeconfig=str(self.kubeconfig),
            netns=self.options.netns,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        opts = self.options
        names = (
            "127.0.0.1",
            "localhost",
            opts.bind_address,
            KUBERNETES_SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            *opts.extra_server_names,
        )
        self.pki = ControlPlanePKI.generate(self.workdir / "pki", tuple(dict.fromkeys(names)))
        ca = self.pki.ca_crt
        for who in ("admin", "controller-manager", "scheduler"):
            crt, key = self.pki.client(who)
            write_kubeconfig(self.workdir / f"{who}.kubeconfig", self.server, ca, crt, key)

        etcd_port, peer_port = _free_port(), _free_port()
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                # A test cluster's data is thrown away: fsync only costs time.
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        kubelet_crt, kubelet_key = self.pki.client("apiserver-kubelet-client")
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={opts.bind_address}",
                f"--advertise-address={opts.bind_address}",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki.apiserver_crt}",
                f"--tls-private-key-file={self.pki.apiserver_key}",
                f"--client-ca-file={ca}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={self.pki.sa_pub}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth=true",
                "--allow-privileged=true",
                # Webhook Services resolve to endpoint IPs: no kube-proxy needed.
                "--enable-aggregator-routing=true",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--profiling=false",
                "--event-ttl=1h",
                # `kubectl logs/exec` on real kubelets: the apiserver's client identity
                # and the node address kubelets listen on (no DNS for node names).
                f"--kubelet-client-certificate={kubelet_crt}",
                f"--kubelet-client-key={kubelet_key}",
                "--kubelet-preferred-address-types=InternalIP",
                # The `kubernetes` Service may not point at loopback; in the
                # sandbox the apiserver binds a real address and keeps it.
                *(["--endpoint-reconciler-type=none"] if _is_loopback(opts.bind_address) else []),
            ],
        )
        self._wait_ready()
        bootstrap.apply_kubeadm_objects(self, public_server=self.server)
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                # kubeadm's set: bootstrapsigner signs cluster-info for token
                # discovery, tokencleaner removes expired bootstrap tokens.
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--cluster-signing-cert-file={ca}",
                f"--cluster-signing-key-file={self.pki.ca_key}",
                f"--root-ca-file={ca}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--node-monitor-grace-period={opts.node_monitor_grace_period}",
                "--node-monitor-period=2s",
                "--profiling=false",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        # The controller manager is up once it published the root CA and made
        # the default service account: pods can be created from then on.
        self._wait_for(
            lambda: (
                self.kubectl(
                    "-n",
                    "default",
                    "get",
                    "serviceaccount/default",
                    "configmap/kube-root-ca.crt",
                    check=False,
                ).returncode
                == 0
            ),
            "the controller manager to create the default service account",
        )

    def stop(self) -> None:
        stop_processes(self.state.processes)
        self.state.processes.clear()
        for child in self._children:  # reap our own children (a zombie is not "stopped")
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        self._children.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state.save()

    # -- helpers ---------------------------------------------------------------------------

    def _ns_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.options.netns] if self.options.netns else []

    def _spawn(self, component: str, args: Sequence[str]) -> None:
        binary = str(self.binaries.path(component))
        log = open(self.workdir / f"{component}.log", "ab")  # noqa: SIM115 - owned by child
        try:
            proc = subprocess.Popen(
                [*self._ns_prefix(), binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.options.die_with_parent else None,
            )
        finally:
            log.close()
        self._children.append(proc)
        self.state.processes.append(ProcessRecord(component, proc.pid, binary))
        self.state.save()

    def _check_alive(self) -> None:
        for record, child in zip(self.state.processes, self._children, strict=True):
            code = child.poll()
            if code is not None:
                raise ControlPlaneError(
                    f"{record.component} exited with status {code} during start-up:\n"
                    f"{self.log_tail(record.component)}"
                )

    def log_tail(self, component: str, lines: int = 30) -> str:
        path = self.workdir / f"{component}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.25)
        raise ControlPlaneError(
            f"timed out after {self.options.ready_timeout_s:.0f}s waiting for {what}"
        )

    def _wait_ready(self) -> None:
        self._wait_for(
            lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0,
            "kube-apiserver /readyz",
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the Go-built kubectl as the cluster admin (inside the netns if any)."""
        argv = [
            *self._ns_prefix(),
            str(self.binaries.kubectl),
            f"--kubeconfig={self.kubeconfig}",
            *args,
        ]
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    @property
    def ca_cert_pem(self) -> bytes:
        return self.pki.ca_crt.read_bytes()

    @property
    def ca_cert_hash(self) -> str:
        return ca_cert_hash(self.ca_cert_pem)

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _is_ours(p: ProcessRecord) -> bool:
    """True if the PID is still the process we started (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{p.pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return p.binary.encode() in cmdline


def stop_processes(processes: Sequence[ProcessRecord], grace_s: float = 10.0) -> None:
    """SIGTERM in reverse start order, then SIGKILL what is left; only our own PIDs."""
    alive = [p for p in reversed(processes) if _is_ours(p)]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_is_ours(p) for p in alive):
        time.sleep(0.1)
    for p in alive:
        if _is_ours(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_is_ours(p) for p in alive):
        time.sleep(0.05)


@contextlib.contextmanager
def running_control_plane(options: ControlPlaneOptions | None = None) -> Iterator[ControlPlane]:
    cp = ControlPlane(options)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
