"""Where a sandbox keeps its files, and the record of what `up` started.

State directory: ``$PENETRATOR_SANDBOX_ROOT/sandbox-<name>/`` (default root
``/run/penetrator``)::

    state.json            spec, processes (pid + start time), faults, forward port
    lock                  flock'd while the state changes
    ssh/id_ed25519        client key that opens every machine (0600)
    ssh/password          root password of every machine (0600)
    ssh/known_hosts       every machine's host key
    etc/                  passwd/shadow bind-mounted into the sshd mount namespaces
    hostkeys/, sshd/, logs/
    machines/<intranet>/<ip>/   one directory per machine (see machine_state_dir)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from penetrator_dev.sandbox.topology import Layout, SandboxSpec

DEFAULT_ROOT = "/run/penetrator"
ROOT_ENV = "PENETRATOR_SANDBOX_ROOT"


def root_dir() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def state_dir(name: str) -> Path:
    return root_dir() / f"sandbox-{name}"


def machine_state_dir(name: str, intranet: int, ip: str) -> Path:
    """A machine's own directory, on the host. Inside an SSH session on that
    machine the same path is in ``$EDGE_MACHINE_DIR`` (and ``$HOME`` is its
    ``home/``). The install-fails fault is the file ``install-fails`` in it."""
    return state_dir(name) / "machines" / str(intranet) / ip


INSTALL_FAILS_MARKER = "install-fails"


def install_fails_marker(name: str, intranet: int, ip: str) -> Path:
    return machine_state_dir(name, intranet, ip) / INSTALL_FAILS_MARKER


@dataclass
class ProcessRecord:
    role: str  # sshd, sshd-wrong-password, sshd-new-host-key, relay-slow, forward
    namespace: str  # "" for the host namespace
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: guards against PID reuse


@dataclass
class State:
    spec: dict[str, Any]
    processes: list[ProcessRecord] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)  # "intranet/ip" -> fault
    arches: dict[str, str] = field(default_factory=dict)  # "intranet/ip" -> arch override
    forward_port: int = 0
    created: float = 0.0

    def sandbox_spec(self) -> SandboxSpec:
        d = dict(self.spec)
        if d.get("layout"):
            d["layout"] = Layout(d["layout"])
        return SandboxSpec(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> State:
        d = json.loads(text)
        d["processes"] = [ProcessRecord(**p) for p in d.get("processes", [])]
        return State(**d)


def spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["layout"] = str(spec.layout) if spec.layout else None
    return d


def load_state(name: str) -> State | None:
    path = state_dir(name) / "state.json"
    try:
        return State.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_state(name: str, st: State) -> None:
    d = state_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    tmp.write_text(st.to_json())
    os.replace(tmp, d / "state.json")


@contextlib.contextmanager
def locked(name: str, timeout: float = 60) -> Iterator[None]:
    """Hold the sandbox's lock (flock on state_dir/lock, bounded wait)."""
    d = state_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sandbox {name} is locked by another command") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------ processes


def start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces; fields after ')' are fixed
    rest = stat.rsplit(")", 1)[1].split()
    return int(rest[19])


def is_alive(rec: ProcessRecord) -> bool:
    return start_ticks(rec.pid) == rec.start_ticks


def kill_pids(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL whatever is left."""
    live = [p for p in pids if _signal(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(0.02)
        live = [p for p in live if process_exists(p)]
    for p in live:
        _signal(p, signal.SIGKILL)
    live = [p for p in pids if process_exists(p)]
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        live = [p for p in live if process_exists(p)]
        if live:
            time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def process_exists(pid: int) -> bool:
    """Whether pid is a live (not zombie) process; reaps it if it is our child."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _argvs() -> Iterator[tuple[int, list[str]]]:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(entry.name), [a.decode(errors="replace") for a in argv]


def processes_with_marker(marker: list[str]) -> list[int]:
    """PIDs whose argv contains `marker` as consecutive arguments (exact match)."""
    n = len(marker)
    return [
        pid
        for pid, args in _argvs()
        if any(args[i : i + n] == marker for i in range(len(args) - n + 1))
    ]


def processes_with_arg_prefix(prefix: str, program: str) -> list[int]:
    """PIDs of `program` (basename of argv[0]) with an argument starting with
    `prefix` (e.g. an sshd whose config is in the state directory)."""
    return [
        pid
        for pid, args in _argvs()
        if args
        and os.path.basename(args[0]) == program
        and any(a.startswith(prefix) for a in args[1:])
    ]
