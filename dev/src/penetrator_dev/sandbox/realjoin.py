"""Edge machines with a real join stack (`sandbox up --real-join N`): the first N
machines of intranet 1 get Debian's containerd and runc, the kubelet and kubeadm
built by testenv/build.sh, and a `systemctl` on their PATH that starts and stops
that kubelet, so the product's ``kubeadm`` template joins them for real. The other
machines keep the stand-in join (sandbox/join), which the 1,000-machine
benchmarks use.

Per machine (``<machine dir>/node/``, the machine dir being ``$EDGE_MACHINE_DIR``):

- a mount namespace of its own, held by a tiny process (role ``edge-mounts``)
  started as ``nsenter --net=/run/netns/NS unshare --mount --propagation slave``
  (not ``ip netns exec``, which remounts /sys and hides /sys/fs/cgroup), where
  /etc/kubernetes, /var/lib/kubelet, /var/lib/cni, /run/containerd and /var/log
  are bind-mounted from ``node/`` and /etc/resolv.conf names 127.0.0.1 (nothing
  listens there: a lookup fails at once instead of kubeadm's preflight waiting
  10 s for an unreachable server). containerd, the kubelet and every SSH session
  on the machine (edge-shell enters it) live in it, so two machines never share
  a socket, a kubelet directory, pod logs or CNI results;
- containerd (role ``edge-containerd``) with its own root, state and socket
  (/run/containerd/containerd.sock inside, the path kubeadm finds by itself),
  ``restrict_oom_score_adj`` (the VM's bounding set lacks CAP_SYS_RESOURCE: runc
  fails on oom_score_adj otherwise), ``disable_apparmor``, cgroupfs, pod network
  namespaces under its state dir, a bridge CNI network of its own, and a pause and
  a busybox image built here (busybox-static + umoci) and imported with ``ctr``;
- the kubelet, started by the ``systemctl`` shim: flags from kubeadm's
  kubeadm-flags.env plus ``KUBELET_EXTRA_ARGS`` (``--node-ip``, and a cgroup
  root of its own, made in every v1 hierarchy), its log in ``node/kubelet.log``.

Undone by ``down``: every process (the namespace's; pods by their cgroups), and
(kubeletnode.py, shared with the real nodes) the cgroups, the sysctls the kubelet
rewrites and the empty host directories made as mount points.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from penetrator_dev.sandbox import kubeletnode
from penetrator_dev.sandbox.state import (
    ProcessRecord,
    machine_state_dir,
    process_exists,
    start_ticks,
)
from penetrator_dev.sandbox.topology import Machine, Topology

ROLE_MOUNTS = "edge-mounts"
ROLE_CONTAINERD = "edge-containerd"
BUSYBOX_IMAGE = kubeletnode.BUSYBOX_IMAGE

# mount point in the machine -> its directory under node/
BINDS = {
    "/etc/kubernetes": "etc-kubernetes",
    "/var/lib/kubelet": "var-lib-kubelet",
    "/var/lib/cni": "var-lib-cni",
    "/run/containerd": "run-containerd",
    "/var/log": "var-log",
}


class RealJoinError(RuntimeError):
    pass


def real_join_machines(topo: Topology, count: int) -> list[Machine]:
    """The machines with a real join stack: the first ``count`` of intranet 1."""
    if count <= 0:
        return []
    machines = list(topo.intranet(1).machines)
    if count > len(machines):
        raise RealJoinError(
            f"--real-join {count}: intranet 1 has only {len(machines)} machines (raise -n)"
        )
    if topo.spec.resolved_layout().value != "netns":
        raise RealJoinError("--real-join needs --layout netns (one namespace per machine)")
    return machines[:count]


def node_dir(name: str, m: Machine) -> Path:
    return machine_state_dir(name, m.intranet, m.ip) / "node"


def cgroup_node(m: Machine) -> str:
    """The machine's node under the sandbox's cgroup parent (kubeletnode)."""
    return f"edge-i{m.intranet}-{m.ip}"


# ------------------------------------------------------------------ pure texts


def containerd_config(d: Path) -> str:
    return kubeletnode.containerd_config(
        d,
        # the paths kubeadm finds by itself, in the machine's own mount namespace
        socket="/run/containerd/containerd.sock",
        cni_dir=d / "cni",
        runc_root="/run/containerd/runc",
        netns_under_state=True,
    )


def cni_config(m: Machine) -> str:
    """A bridge network private to the machine (its pods reach only it)."""
    subnet = f"10.244.{m.index % 250}.0/24"
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "edge",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "subnet": subnet},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=1,
    )


SYSTEMCTL_SHIM = r"""#!/bin/sh
# penetrator sandbox: `systemctl` on a real-join machine (no systemd here). kubeadm
# calls it to restart, stop and ask about the kubelet; it runs this machine's
# kubelet as systemd's kubeadm drop-in would (10-kubeadm.conf).
d=@NODE@
pidfile=$d/kubelet.pid
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
stop() {
  if running; then
    p=$(cat "$pidfile"); kill "$p"; i=0
    while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -9 "$p" 2>/dev/null
  fi
  rm -f "$pidfile"
}
start() {
  KUBELET_KUBEADM_ARGS=""
  mkdir -p /etc/kubernetes/manifests  # its staticPodPath (kubeadm's default)
  [ -f /var/lib/kubelet/kubeadm-flags.env ] && . /var/lib/kubelet/kubeadm-flags.env
  . "$d/kubelet.env"
  # word splitting of the two variables is what systemd does with them
  setsid @KUBELET@ --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
    --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml \
    $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS </dev/null >>"$d/kubelet.log" 2>&1 &
  echo $! >"$pidfile"
}
verb=""; unit=""
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$a; elif [ -z "$unit" ]; then unit=$a; fi ;;
  esac
done
unit=${unit%.service}
case "$verb" in daemon-reload|reset-failed) exit 0 ;; esac
if [ "$unit" != kubelet ]; then
  echo "systemctl (penetrator sandbox): no unit $unit on this machine, only kubelet" >&2; exit 4
fi
case "$verb" in
  start) running || start ;;
  restart) stop; start ;;
  stop) stop ;;
  enable|disable) ;;
  is-active) if running; then echo active; else echo inactive; exit 3; fi ;;
  is-enabled) echo enabled ;;
  status) if running; then echo "kubelet: active"; else echo "kubelet: inactive"; exit 3; fi ;;
  *) echo "systemctl (penetrator sandbox): $verb is not supported" >&2; exit 1 ;;
esac
"""

KUBEADM_WRAPPER = r"""#!/bin/sh
# penetrator sandbox: kubeadm on a real-join machine. `kubeadm join` ignores the
# preflight checks that cannot hold for a machine that is a network namespace on a
# shared host, and only those:
#   SystemVerification: fails on cgroup v1, which this host has (the kubelet runs on
#                       it with failCgroupV1: false; kubeadm says to skip the check).
if [ "$1" = join ]; then
  exec @KUBEADM@ "$@" --ignore-preflight-errors=SystemVerification
fi
exec @KUBEADM@ "$@"
"""


def kubelet_env(name: str, m: Machine) -> str:
    root = kubeletnode.cgroup_root(name, cgroup_node(m))
    return f'KUBELET_EXTRA_ARGS="--node-ip={m.ip} --cgroup-root={root}"\n'


def mounts_script(d: Path) -> str:
    """Run in the machine's new mount namespace: bind its directories, keep it."""
    lines = ["set -e"]
    for target, sub in BINDS.items():
        lines.append(f"mount --bind {d / sub} {target}")
    lines += [
        f"mount --bind {d / 'resolv.conf'} /etc/resolv.conf",
        # `kubeadm reset` empties /var/lib/etcd when it finds no kubeadm config: never
        # the host's (when it has one)
        f"if [ -d /var/lib/etcd ]; then mount --bind {d / 'var-lib-etcd'} /var/lib/etcd; fi",
        "exec sleep infinity",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ host side


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def prepare_machine(name: str, m: Machine, binaries: Path) -> None:
    """Write the machine's node/ directory and bin/ tools; make its cgroup."""
    d = node_dir(name, m)
    for sub in [*BINDS.values(), "var-lib-etcd", "cni", "containerd"]:
        (d / sub).mkdir(parents=True, exist_ok=True)
    _write(d / "containerd.toml", containerd_config(d))
    _write(d / "cni" / "10-edge.conflist", cni_config(m))
    _write(d / "resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    _write(d / "kubelet.env", kubelet_env(name, m))
    bin_dir = machine_state_dir(name, m.intranet, m.ip) / "bin"
    _write(bin_dir / "systemctl", SYSTEMCTL_SHIM.replace("@NODE@", str(d)).replace(
        "@KUBELET@", str(binaries / "kubelet")), 0o755)  # fmt: skip
    _write(
        bin_dir / "kubeadm", KUBEADM_WRAPPER.replace("@KUBEADM@", str(binaries / "kubeadm")), 0o755
    )
    kubelet_link = bin_dir / "kubelet"  # kubeadm's preflight asks `kubelet --version`
    kubelet_link.unlink(missing_ok=True)
    kubelet_link.symlink_to(binaries / "kubelet")
    kubeletnode.make_cgroup(name, cgroup_node(m))


def _spawn(argv: list[str], log: Path, role: str, namespace: str) -> ProcessRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True
        )
    return ProcessRecord(role, namespace, p.pid, start_ticks(p.pid) or 0)


def in_machine(holder: int, argv: Sequence[str]) -> list[str]:
    """argv run in the machine's network and mount namespaces."""
    return ["nsenter", f"--net=/proc/{holder}/ns/net", f"--mount=/proc/{holder}/ns/mnt", *argv]


def start_machine(name: str, m: Machine, archive: Path) -> list[ProcessRecord]:
    """The machine's mount namespace holder and its containerd (images imported)."""
    d = node_dir(name, m)
    net = ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]  # kubeadm's preflight wants it
    kubeletnode.run(["nsenter", f"--net=/run/netns/{m.namespace}", *net])
    holder = _spawn(
        ["nsenter", f"--net=/run/netns/{m.namespace}", "unshare", "--mount",
         "--propagation", "slave", "sh", "-c", mounts_script(d)],
        d / "mounts.log", ROLE_MOUNTS, m.namespace,
    )  # fmt: skip
    _wait(lambda: _mounted(holder.pid, "/run/containerd"), f"the mounts of {m.ip}", holder)
    (d / "holder.pid").write_text(f"{holder.pid}\n")
    ctrd = _spawn(
        in_machine(holder.pid, ["containerd", "--config", str(d / "containerd.toml")]),
        d / "containerd.log", ROLE_CONTAINERD, m.namespace,
    )  # fmt: skip
    sock = d / BINDS["/run/containerd"] / "containerd.sock"
    _wait(sock.exists, f"containerd of {m.ip}", ctrd)
    ctr = ["ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io"]
    _wait(lambda: _ok(in_machine(holder.pid, [*ctr, "version"])), f"containerd of {m.ip}", ctrd)
    kubeletnode.import_busybox(in_machine(holder.pid, ctr), archive)
    return [holder, ctrd]


def _ok(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0


def _mounted(pid: int, target: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False
    return any(line.split()[4] == target for line in text.splitlines())


def _wait(ready: object, what: str, rec: ProcessRecord, timeout: float = 60) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if not process_exists(rec.pid):
            raise RealJoinError(f"{what}: {rec.role} (pid {rec.pid}) exited")
        if time.monotonic() > deadline:
            raise RealJoinError(f"{what} not ready within {timeout:.0f}s")
        time.sleep(0.05)


def start_real_join(name: str, topo: Topology, count: int) -> list[ProcessRecord]:
    """Prepare and start the join stacks of the first ``count`` machines; returns
    their processes (the caller records them, so `down` knows them)."""
    from penetrator_dev.testenv.binaries import find_binaries

    machines = real_join_machines(topo, count)
    if not machines:
        return []
    for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "umoci", "nsenter"):
        if shutil.which(tool) is None:
            raise RealJoinError(f"--real-join needs {tool}: run scripts/setup.sh")
    binaries = find_binaries().directory
    archive = kubeletnode.busybox_archive()
    kubeletnode.save_host_state(name, BINDS)
    out: list[ProcessRecord] = []
    for m in machines:
        prepare_machine(name, m, binaries)
        out += start_machine(name, m, archive)
    return out
