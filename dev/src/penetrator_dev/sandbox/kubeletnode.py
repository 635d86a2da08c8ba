"""What every real kubelet of a sandbox does to the host, in one place: the real
nodes of `--nodes real` (realnode.py) and the real-join edge machines of
`--real-join N` (realjoin.py) both use it.

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
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from penetrator_dev.sandbox.state import process_exists, root_dir, state_dir

KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
SYSCTLS_FILE = "host-sysctls.json"
MADE_DIRS_FILE = "host-dirs.json"


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
    return sorted(p for p in root_dir().glob("sandbox-*") if p != mine and p.is_dir())


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
