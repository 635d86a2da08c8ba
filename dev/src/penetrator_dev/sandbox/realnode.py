"""Real nodes of the sandbox: per node one Debian containerd 1.6 and one kubelet
v1.37.2 (built by testenv/build.sh), in the node's network namespace and in a mount
namespace of their own, running pods from images imported into that node's
containerd (the project's image, scripts/image.sh, and a local pause image): no
registry.

Each node (``control-plane`` in the cloud namespace, ``proxy-<k>`` in intranet k's
proxy namespace) gets, under ``<state>/cluster/realnodes/<node>/``:

- ``containerd.toml``: private root, state, socket and runc root;
  ``restrict_oom_score_adj`` (the VM's bounding set lacks CAP_SYS_RESOURCE, so
  runc cannot raise oom_score_adj), ``disable_apparmor``, ``SystemdCgroup = false``;
- ``net.d/`` a CNI bridge with its own pod subnet 10.244.<k>.0/24 (0: control-plane);
- ``kubelet.yaml``: cgroupfs driver, its own ``cgroupRoot``
  (``/penetrator-sandbox-<name>/<node>``, made in every hierarchy),
  ``failCgroupV1: false``, ``failSwapOn: false``, webhook authn/authz, image GC off
  (the imported images are all there is);
- a mount namespace (``unshare -m --propagation slave``) with /var/lib/kubelet,
  /etc/kubernetes, /var/lib/cni, /var/log/pods, /var/log/containers, /run/netns and
  /run/containerd bound from that directory: kubelets would otherwise share the
  device-plugin socket, pod logs and CNI results.

Both processes enter the network namespace with ``nsenter --net=/run/netns/X``
(``ip netns exec`` remounts /sys and hides /sys/fs/cgroup). There is no kube-proxy:
a DNAT in each node's namespace (and a route, so that local sockets reach it) sends
the ``kubernetes`` Service address to the apiserver, as kube-proxy would.

What the kubelets do to the host (cgroups, sysctls, bind targets made on the host)
is kept and undone by kubeletnode.py, for these nodes and the real-join machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from penetrator_dev.sandbox import kubeletnode
from penetrator_dev.sandbox.state import ProcessRecord, start_ticks, state_dir

ROLE_CONTAINERD = "node-containerd"
ROLE_KUBELET = "node-kubelet"
ROLES = (ROLE_CONTAINERD, ROLE_KUBELET)
# Host paths the kubelet and containerd use without a setting to move them: each
# node binds its own directory over them, in its own mount namespace.
PRIVATE_PATHS = (
    "/var/lib/kubelet",
    "/etc/kubernetes",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/run/netns",
    "/run/containerd",
)
# What the kubernetes Service (KUBERNETES_SERVICE_HOST/PORT in every pod) is.
SERVICE_IP = "10.96.0.1"
SERVICE_PORT = 443


class RealNodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str
    netns: str
    index: int  # 0: the control-plane node; k: intranet k's proxy node
    taints: tuple[dict[str, str], ...] = ()

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"


def nodes_dir(sandbox: str) -> Path:
    return state_dir(sandbox) / "cluster" / "realnodes"


def node_dir(sandbox: str, node: str) -> Path:
    return nodes_dir(sandbox) / node


def socket_path(sandbox: str, node: str) -> Path:
    return node_dir(sandbox, node) / "containerd.sock"


# ------------------------------------------------------------------ images


def repo_root() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "scripts" / "image.sh").is_file():
            return parent
    raise RealNodeError("scripts/image.sh not found: real nodes run the image of a checkout")


def project_image() -> Path:
    """The OCI archive scripts/image.sh builds (cached by its inputs)."""
    p = subprocess.run(
        ["bash", str(repo_root() / "scripts" / "image.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise RealNodeError(f"scripts/image.sh failed:\n{p.stderr[-2000:]}")
    return Path(p.stdout.strip().splitlines()[-1])


PACKAGES_IN_IMAGE = "/var/lib/penetrator/packages"
JOB_IMAGE_BASE = "docker.io/library/penetrator-sandbox-job"


def job_image(project: Path, packages: dict[str, Path]) -> Path:
    """The project's image plus one layer with the sandbox's install packages under
    PACKAGES_IN_IMAGE (an image as the packages' source: a real pod sees no host
    path). Cached by the two inputs."""
    import hashlib

    h = hashlib.sha256(project.read_bytes())
    for arch in sorted(packages):
        h.update(arch.encode() + packages[arch].read_bytes())
    out = kubeletnode.cache_dir() / f"job-image-{h.hexdigest()[:16]}.tar"
    files = {f"{PACKAGES_IN_IMAGE}/{p.name}": p for p in packages.values()}
    return kubeletnode.with_layer(project, files, out)


def image_tag(archive: Path) -> str:
    """The tag (org.opencontainers.image.ref.name) of an OCI archive's one image."""
    import tarfile

    with tarfile.open(archive) as tar:
        f = tar.extractfile("./index.json")
        assert f is not None
        index = json.load(f)
    return str(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])


def import_image(sandbox: str, node: str, archive: Path, base_name: str) -> None:
    """`ctr images import` into the node's containerd (namespace k8s.io, where the
    CRI looks), named <base_name>:<the archive's tag>."""
    kubeletnode.run(
        [*ctr(sandbox, node), "images", "import", f"--base-name={base_name}", str(archive)]
    )


def ctr(sandbox: str, node: str) -> list[str]:
    """``ctr`` talking to the node's containerd, in the CRI's namespace."""
    return ["ctr", f"--address={socket_path(sandbox, node)}", "-n", kubeletnode.CTR_NAMESPACE]


# ------------------------------------------------------------------ configs


def containerd_config(sandbox: str, node: str) -> str:
    d = node_dir(sandbox, node)
    return kubeletnode.containerd_config(
        d,
        socket=str(socket_path(sandbox, node)),
        cni_dir=d / "net.d",
        runc_root=str(d / "runc"),
        netns_under_state=False,  # /run/netns is the node's own (PRIVATE_PATHS)
    )


def cni_config(node: RealNode) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "sandbox",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=1,
    )


def kubelet_config(sandbox: str, node: RealNode, ca: Path) -> str:
    cfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "readOnlyPort": 0,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": kubeletnode.cgroup_root(sandbox, node.name),
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket_path(sandbox, node.name)}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": list(node.taints),
        # The imported images are the only ones there are: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%"},
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # A crashed container is back within 10 s (the chaos suite kills the
        # operator five times; the default backoff would reach 160 s).
        "crashLoopBackOff": {"maxContainerRestartPeriod": "10s"},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def service_ruleset(apiserver: str, port: int) -> str:
    """kube-proxy's one rule the sandbox needs: the kubernetes Service -> apiserver."""
    rule = f"ip daddr {SERVICE_IP} tcp dport {SERVICE_PORT} dnat to {apiserver}:{port}"
    return f"""table ip pnservice {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    {rule}
  }}
  chain output {{
    type nat hook output priority -100;
    {rule}
  }}
}}
"""


# ------------------------------------------------------------------ start


def mount_script(sandbox: str, node: str) -> str:
    d = node_dir(sandbox, node)
    lines = ["set -e"]
    for p in PRIVATE_PATHS:
        src = d / "private" / p.strip("/").replace("/", "_")
        src.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --bind {src} {p}")
    lines.append(f"exec containerd --config {d / 'containerd.toml'}")
    return "\n".join(lines) + "\n"


def write_node_files(sandbox: str, node: RealNode, ca: Path, kubeconfig: Path) -> None:
    d = node_dir(sandbox, node.name)
    (d / "net.d").mkdir(parents=True, exist_ok=True)
    (d / "containerd.toml").write_text(containerd_config(sandbox, node.name))
    (d / "net.d" / "10-sandbox.conflist").write_text(cni_config(node))
    (d / "kubelet.yaml").write_text(kubelet_config(sandbox, node, ca))
    (d / "node.sh").write_text(mount_script(sandbox, node.name))
    shutil.copy2(kubeconfig, d / "kubelet.kubeconfig")


def _popen(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True
        )


def start_containerd(sandbox: str, node: RealNode) -> ProcessRecord:
    d = node_dir(sandbox, node.name)
    argv = [
        "nsenter", f"--net=/run/netns/{node.netns}", "--",
        "unshare", "-m", "--propagation", "slave", "--",
        "sh", str(d / "node.sh"),
    ]  # fmt: skip
    p = _popen(argv, d / "containerd.log")
    deadline = time.monotonic() + 60
    while not socket_path(sandbox, node.name).exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise RealNodeError(
                f"containerd of node {node.name} did not start; {d}/containerd.log ends:\n"
                + _tail(d / "containerd.log")
            )
        time.sleep(0.1)
    return ProcessRecord(ROLE_CONTAINERD, node.netns, p.pid, start_ticks(p.pid) or 0)


def start_kubelet(
    sandbox: str, node: RealNode, kubelet: Path, containerd_pid: int
) -> ProcessRecord:
    """The kubelet in the mount and network namespaces of the node's containerd."""
    d = node_dir(sandbox, node.name)
    argv = [
        "nsenter", f"--target={containerd_pid}", "--mount", "--net", "--",
        str(kubelet), f"--config={d / 'kubelet.yaml'}",
        f"--kubeconfig={d / 'kubelet.kubeconfig'}",
        f"--hostname-override={node.name}", f"--node-ip={node.ip}",
    ]  # fmt: skip
    p = _popen(argv, d / "kubelet.log")
    return ProcessRecord(ROLE_KUBELET, node.netns, p.pid, start_ticks(p.pid) or 0)


def start_node(
    sandbox: str,
    node: RealNode,
    *,
    kubelet: Path,
    images: Sequence[tuple[Path, str]],
    apiserver: tuple[str, int],
) -> list[ProcessRecord]:
    """containerd, the images (busybox and pause too), the Service DNAT, then the
    kubelet of one node (its files written by `write_node_files`)."""
    kubeletnode.make_cgroup(sandbox, node.name)
    kubeletnode.run(
        ["nsenter", f"--net=/run/netns/{node.netns}", "--", "nft", "-f", "-"],
        input=service_ruleset(*apiserver),
    )
    # A local socket's route is looked up before the output DNAT: without one (the
    # cloud namespace has no default route) connect() fails with ENETUNREACH.
    kubeletnode.run(["ip", "-n", node.netns, "route", "replace", f"{SERVICE_IP}/32", "dev", "lo"])
    ctrd = start_containerd(sandbox, node)
    try:
        kubeletnode.import_busybox(ctr(sandbox, node.name), kubeletnode.busybox_archive())
        for archive, base_name in images:
            import_image(sandbox, node.name, archive, base_name)
        return [ctrd, start_kubelet(sandbox, node, kubelet, ctrd.pid)]
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ctrd.pid, 9)
        raise


# ------------------------------------------------------------------ helpers


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
