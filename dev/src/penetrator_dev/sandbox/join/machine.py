"""Which machine the join program runs on, and where it keeps its state.

Inside an SSH session on a sandbox machine, the login shell (edge-shell, see
penetrator_dev.sandbox.machines) exports ``EDGE_MACHINE_DIR`` (the machine's own
state directory, ``<sandbox state>/machines/<intranet>/<ip>``) and
``EDGE_MACHINE_IP``; both layouts (netns and addresses) give them. Outside the
sandbox (tests against a loopback cluster) the caller sets them, and
``EDGE_HEARTBEAT_DIR`` names the heartbeat service's registry.

Files the join keeps (all under ``$EDGE_MACHINE_DIR/kubelet/``)::

    pki/ca.crt                      the cluster CA (from verified cluster-info)
    pki/kubelet-client.key          the node's private key (0600)
    pki/kubelet-client.crt          its certificate, issued through a CSR (0600)
    kubelet.conf                    a kubeconfig using them (0600)
    node.json                       node name, server, IP, arch, CSR name

and, outside ``kubelet/`` so that ``reset`` keeps it, ``$EDGE_MACHINE_DIR/edgeadm.log``:
the machine's own append-only record of every ``edgeadm join`` and ``reset`` run on
it, one JSON line each when it starts and when it ends (with its exit status). Tests
count installs from it.

The heartbeat registry (``<sandbox state>/heartbeat/<intranet>/machines/``)
gets one file per joined machine; the heartbeat service of that intranet
watches it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MACHINE_DIR_ENV = "EDGE_MACHINE_DIR"
MACHINE_IP_ENV = "EDGE_MACHINE_IP"
HEARTBEAT_DIR_ENV = "EDGE_HEARTBEAT_DIR"
INSTALL_FAILS_MARKER = "install-fails"  # same name as penetrator_dev.sandbox.state's
JOURNAL = "edgeadm.log"


class MachineError(Exception):
    pass


def write_file(path: Path, data: bytes | str, mode: int) -> None:
    """Atomically write `path` with `mode` (the mode is set before any byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sandbox_layout(machine_dir: Path) -> tuple[Path, int, str] | None:
    """(sandbox state dir, intranet, ip) when `machine_dir` is
    `<state>/machines/<intranet>/<ip>`."""
    parts = machine_dir.parts
    if len(parts) >= 4 and parts[-3] == "machines" and parts[-2].isdigit():
        return machine_dir.parents[2], int(parts[-2]), parts[-1]
    return None


def sandbox_registry(state: Path, intranet: int) -> Path:
    return state / "heartbeat" / str(intranet)


@dataclass(frozen=True)
class MachineContext:
    machine_dir: Path
    ip: str | None
    registry: Path | None
    intranet: int | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> MachineContext:
        e = os.environ if env is None else env
        d = e.get(MACHINE_DIR_ENV)
        if not d:
            raise MachineError(
                f"${MACHINE_DIR_ENV} is not set: run edgeadm from an SSH session on a sandbox "
                "edge machine (its login shell sets it)"
            )
        machine_dir = Path(d)
        if not machine_dir.is_dir():
            raise MachineError(f"the machine's state directory {machine_dir} does not exist")
        ip = e.get(MACHINE_IP_ENV) or None
        layout = sandbox_layout(machine_dir)
        registry: Path | None = None
        intranet = None
        if e.get(HEARTBEAT_DIR_ENV):
            registry = Path(e[HEARTBEAT_DIR_ENV])
        elif layout:
            registry = sandbox_registry(layout[0], layout[1])
        if layout:
            intranet = layout[1]
            ip = ip or layout[2]
        return cls(machine_dir, ip, registry, intranet)

    # -- files --------------------------------------------------------------------------
    @property
    def kubelet_dir(self) -> Path:
        return self.machine_dir / "kubelet"

    @property
    def ca_file(self) -> Path:
        return self.kubelet_dir / "pki" / "ca.crt"

    @property
    def key_file(self) -> Path:
        return self.kubelet_dir / "pki" / "kubelet-client.key"

    @property
    def cert_file(self) -> Path:
        return self.kubelet_dir / "pki" / "kubelet-client.crt"

    @property
    def kubeconfig_file(self) -> Path:
        return self.kubelet_dir / "kubelet.conf"

    @property
    def node_file(self) -> Path:
        return self.kubelet_dir / "node.json"

    @property
    def journal_file(self) -> Path:
        return self.machine_dir / JOURNAL

    def journal(self, command: str, event: str, **fields: Any) -> None:
        """Append one line to the machine's record of edgeadm runs (one write of one
        line with O_APPEND: concurrent runs never interleave within a line)."""
        line = {
            "time": time.time(),
            "pid": os.getpid(),
            "tool": os.environ.get("EDGE_JOIN_TOOL", "edgeadm"),  # the kubeadm stand-in's
            "command": command,
            "event": event,
        }
        data = (json.dumps({**line, **fields}) + "\n").encode()
        fd = os.open(self.journal_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def install_fails(self) -> bool:
        return (self.machine_dir / INSTALL_FAILS_MARKER).exists()

    def uname_m(self) -> str:
        """`uname -m` as the machine answers it (the sandbox may put a shim first
        on PATH that answers aarch64)."""
        try:
            out = subprocess.run(
                ["uname", "-m"], capture_output=True, text=True, check=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise MachineError(f"cannot run uname -m: {e}") from None
        return out.stdout.strip()

    def clear_state(self) -> bool:
        """Remove the node's credentials and records. True if there were any."""
        if self.kubelet_dir.exists():
            shutil.rmtree(self.kubelet_dir)
            return True
        return False

    # -- heartbeat registry -------------------------------------------------------------
    @property
    def entry_name(self) -> str:
        h = hashlib.sha256(str(self.machine_dir.resolve()).encode()).hexdigest()[:16]
        return f"{self.ip or 'machine'}-{h}.json"

    def entry_path(self) -> Path | None:
        if self.registry is None:
            return None
        return self.registry / "machines" / self.entry_name

    def register(self, record: dict[str, Any]) -> Path | None:
        p = self.entry_path()
        if p is None:
            return None
        write_file(p, json.dumps(record, indent=1), 0o600)
        return p

    def unregister(self) -> bool:
        p = self.entry_path()
        if p is not None and p.exists():
            p.unlink()
            return True
        return False
