"""What every real kubelet of a sandbox does to the host, in one place: the real
sandbox's nodes (realnode.py) and the real-join edge machines of
`--real-join N` (realjoin.py) both use it.

- containerd's configuration (``containerd_config``) and the busybox image every
  node has, whose ``pause`` tag is the pod sandbox image (``busybox_archive``,
  ``import_busybox``): no registry.
- The kubelets' cgroups: all under ``penetrator-sandbox-<name>/`` in every
  hierarchy (``cgroup_root``), so one walk finds the pods of both kinds of node
  (pods with a network namespace of their own are in no namespace of the sandbox).
- The host sysctls a kubelet rewrites at start (``KUBELET_SYSCTLS``): their values
  before the first kubelet are kept in ``<state>/host-sysctls.json``.
- The host directories made as bind-mount targets: listed in
  ``<state>/host-dirs.json``.

``cleanup`` (called once by ``down``, also after a crash, once nothing of the
sandbox runs) removes the cgroups, puts the sysctls back and removes the
directories it made, unless another sandbox is up: an empty directory that is a
mount point in another mount namespace is silently detached there when removed,
so the directories are handed to a sandbox still up, and the last one down
removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from penetrator_dev.sandbox.state import process_exists, root_dir, state_dir

KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
SYSCTLS_FILE = "host-sysctls.json"
MADE_DIRS_FILE = "host-dirs.json"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
BUSYBOX_IMAGE = "localhost/penetrator/busybox:1"
BUSYBOX_TOOLS = ("sh", "sleep", "cat", "cp", "echo", "ls", "hostname", "true")
"""A busybox-static image every real node and real-join machine has (pods use it
with imagePullPolicy IfNotPresent or Never: there is no registry)."""
PAUSE_ENTRYPOINT = (
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
)
CTR_NAMESPACE = "k8s.io"  # where the CRI looks for images
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins


class KubeletNodeError(RuntimeError):
    pass


# ------------------------------------------------------------------ containerd


def containerd_config(
    d: Path, *, socket: str, cni_dir: Path, runc_root: str, netns_under_state: bool
) -> str:
    """Private root, state, socket and runc root under ``d``; ``restrict_oom_score_adj``
    (the VM's bounding set lacks CAP_SYS_RESOURCE: runc fails on oom_score_adj
    otherwise), ``disable_apparmor``, ``SystemdCgroup = false``."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = {str(netns_under_state).lower()}
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{runc_root}"
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_dir}"
"""


def cache_dir() -> Path:
    root = os.environ.get("PENETRATOR_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "penetrator"
    )
    return Path(root)


def busybox_archive() -> Path:
    """An OCI archive of busybox-static (tags ``1``: a shell, and ``pause``: the pod
    sandbox), built once with umoci, cached."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise KubeletNodeError("/bin/busybox is missing: install busybox-static (scripts/setup.sh)")
    recipe = repr((PAUSE_ENTRYPOINT, BUSYBOX_TOOLS)).encode()
    key = hashlib.sha256(busybox.read_bytes() + recipe).hexdigest()[:12]
    out = cache_dir() / f"busybox-{key}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layout, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
        image = f"{layout}:1"
        run(["umoci", "init", "--layout", str(layout)])
        run(["umoci", "new", "--image", image])
        run(["umoci", "unpack", "--image", image, str(bundle)])
        bin_dir = bundle / "rootfs" / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy2(busybox, bin_dir / "busybox")
        for tool in BUSYBOX_TOOLS:
            (bin_dir / tool).symlink_to("busybox")
        run(["umoci", "repack", "--image", image, str(bundle)])
        run(["umoci", "config", "--image", image, "--config.cmd", "/bin/sh"])
        # the pause image: the same layer, waiting until told to stop
        pause = [f"--config.entrypoint={a}" for a in PAUSE_ENTRYPOINT]
        run(["umoci", "config", "--image", image, "--tag", "pause", *pause])
        run(["umoci", "gc", "--layout", str(layout)])
        part = out.with_suffix(".partial")
        run(["tar", "--owner=0", "--group=0", "-C", str(layout), "-cf", str(part), "."])
        os.replace(part, out)
    return out


def with_layer(
    base: Path, files: dict[str, Path], out: Path, *, base_tag: str | None = None
) -> Path:
    """``out``: the OCI archive of one image, ``base``'s image (its first tag, or
    ``base_tag``) plus one layer holding ``files`` (path in the image -> host file,
    mode 0644, owned by root), tagged with ``out``'s stem. Built once: an existing
    ``out`` is returned as it is (callers name it by a hash of the inputs)."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="layer-", dir=out.parent) as tmp:
        layout, root = Path(tmp) / "oci", Path(tmp) / "layer"
        layout.mkdir()
        run(["tar", "-xf", str(base), "-C", str(layout)])
        index = json.loads((layout / "index.json").read_text())
        tags = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        tag = base_tag or tags[0]
        for dest, src in files.items():
            target = root / dest.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            target.chmod(0o644)
        run(["tar", "--owner=0", "--group=0", "-C", str(root), "-cf", f"{tmp}/layer.tar", "."])
        image = f"{layout}:{tag}"
        run(["umoci", "raw", "add-layer", "--image", image, "--tag", out.stem, f"{tmp}/layer.tar"])
        for old in tags:  # one image per archive: its import names one image
            run(["umoci", "rm", "--image", f"{layout}:{old}"])
        run(["umoci", "gc", "--layout", str(layout)])
        run(["tar", "--owner=0", "--group=0", "-C", str(layout), "-cf", f"{tmp}/out.tar", "."])
        os.replace(f"{tmp}/out.tar", out)
    return out


def import_busybox(ctr: Sequence[str], archive: Path) -> None:
    """Import ``busybox_archive`` with ``ctr`` (the argv that reaches the node's
    containerd, namespace k8s.io) and name its ``pause`` tag PAUSE_IMAGE."""
    base = BUSYBOX_IMAGE.rsplit(":", 1)[0]
    run([*ctr, "images", "import", "--base-name", base, str(archive)])
    run([*ctr, "images", "tag", "--force", f"{base}:pause", PAUSE_IMAGE])


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 120) -> str:
    p = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, check=False, timeout=timeout
    )
    if p.returncode != 0:
        out = (p.stderr or p.stdout).strip()[-2000:]
        raise KubeletNodeError(f"{' '.join(argv[:6])} failed: {out}")
    return p.stdout


# ------------------------------------------------------------------ cgroups


def cgroup_parent(sandbox: str) -> str:
    return f"penetrator-sandbox-{sandbox}"


def cgroup_root(sandbox: str, node: str) -> str:
    """A kubelet's cgroupRoot (absolute, as the kubelet wants it)."""
    return f"/{cgroup_parent(sandbox)}/{node}"


def hierarchies() -> list[Path]:
    """The cgroup hierarchies mounted here: the v1 ones and, on a hybrid host, the
    unified one (the kubelet makes its cgroups there too)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            out.append(Path(left.split()[4]))
    return out


def make_cgroup(sandbox: str, node: str) -> None:
    """A node's cgroupRoot in every hierarchy (cpuset copied from the root, else
    its tasks cannot run)."""
    for h in hierarchies():
        for rel in (cgroup_parent(sandbox), cgroup_root(sandbox, node).lstrip("/")):
            d = h / rel
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (h / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


def cgroup_dirs(sandbox: str) -> list[Path]:
    """The sandbox's cgroups in every hierarchy, deepest first."""
    out: list[Path] = []
    for h in hierarchies():
        top = h / cgroup_parent(sandbox)
        if top.is_dir():
            out += [Path(root) for root, _dirs, _files in os.walk(top)]
    return sorted(out, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(sandbox: str) -> list[int]:
    """Every process in the sandbox's cgroups."""
    pids: set[int] = set()
    for d in cgroup_dirs(sandbox):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    return sorted(pids)


def kill_cgroup_processes(sandbox: str) -> list[int]:
    """SIGKILL every process in the sandbox's cgroups; wait (bounded) until gone."""
    pids = cgroup_pids(sandbox)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(process_exists(p) for p in pids):
        time.sleep(0.05)
    return pids


def _remove_cgroups(sandbox: str) -> list[Path]:
    """Returns the cgroups left (a killed task leaves its cgroup a moment later)."""
    for _ in range(50):
        left = [d for d in cgroup_dirs(sandbox) if not _rmdir(d)]
        if not left:
            return []
        time.sleep(0.1)
    return left


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


# ------------------------------------------------------------------ host state


def _proc_sys(key: str) -> Path:
    return Path("/proc/sys", *key.split("."))


def save_host_state(sandbox: str, dirs: Iterable[str]) -> None:
    """Before any kubelet: keep the host's sysctls (once per sandbox) and make the
    missing bind targets among ``dirs``, remembering which (`cleanup` undoes both)."""
    sd = state_dir(sandbox)
    sd.mkdir(parents=True, exist_ok=True)
    if not (sd / SYSCTLS_FILE).exists():
        found = {k: _proc_sys(k).read_text().strip() for k in KUBELET_SYSCTLS}
        (sd / SYSCTLS_FILE).write_text(json.dumps(found))
    made = [d for d in dirs if not Path(d).exists()]
    for d in made:
        Path(d).mkdir(parents=True)
    _add_made_dirs(sd, made)


def _add_made_dirs(sd: Path, dirs: list[str]) -> None:
    f = sd / MADE_DIRS_FILE
    old: list[str] = json.loads(f.read_text()) if f.exists() else []
    f.write_text(json.dumps(old + [d for d in dirs if d not in old]))


def _other_sandboxes(sandbox: str) -> list[Path]:
    mine = state_dir(sandbox)
    if not root_dir().is_dir():
        return []
    # only sandboxes with kubelets keep the host state file; one without a cluster
    # (`up --no-cluster`) changes nothing on the host and needs nothing handed over
    return sorted(
        p for p in root_dir().glob("sandbox-*") if p != mine and (p / SYSCTLS_FILE).exists()
    )


def _restore(sd: Path) -> list[str]:
    done: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads((sd / SYSCTLS_FILE).read_text()).items():
            if _proc_sys(key).read_text().strip() != value:
                _proc_sys(key).write_text(value)
                done.append(f"sysctl {key}={value}")
    made_file = sd / MADE_DIRS_FILE
    for d in reversed(json.loads(made_file.read_text()) if made_file.exists() else []):
        with contextlib.suppress(OSError):
            Path(d).rmdir()
            done.append(f"removed {d}")
    return done


def _hand_over(sd: Path, other: Path) -> list[str]:
    """Give another sandbox (still up) what to undo: the sysctls found first (the
    older file holds the host's own values) and the directories made."""
    mine, theirs = sd / SYSCTLS_FILE, other / SYSCTLS_FILE
    with contextlib.suppress(OSError):
        if mine.exists() and (not theirs.exists() or theirs.stat().st_mtime > mine.stat().st_mtime):
            os.replace(mine, theirs)
    made_file = sd / MADE_DIRS_FILE
    made: list[str] = json.loads(made_file.read_text()) if made_file.exists() else []
    if made:
        _add_made_dirs(other, made)
    return [f"host sysctls and directories {made} left to {other.name}, still up"]


def cleanup(sandbox: str) -> list[str]:
    """After every process is gone: remove the cgroups, put the host sysctls back,
    remove the bind targets made on the host (or hand them to another sandbox
    that is up). Returns what it did."""
    done: list[str] = []
    left = _remove_cgroups(sandbox)
    if left:
        done.append(f"cgroups left: {[str(d) for d in left]}")
    sd = state_dir(sandbox)
    others = _other_sandboxes(sandbox)
    if others:  # their kubelets run: leave the host as they know it, to the last one
        done += _hand_over(sd, others[0])
    else:
        done += _restore(sd)
    (sd / SYSCTLS_FILE).unlink(missing_ok=True)
    (sd / MADE_DIRS_FILE).unlink(missing_ok=True)
    return done
