"""The heartbeat service: one asyncio process keeps every joined machine of an
intranet Ready, as each machine's kubelet would, without a process per machine.

For each machine it holds the node's own client certificate (issued through
the CSR at join) in one SSL context and at most one kept-alive HTTP/1.1
connection, and

* renews the node's Lease in kube-node-lease every ``lease_interval`` (10 s,
  the kubelet's default),
* posts the node status (Ready and the pressure conditions, with a fresh
  heartbeat time) every ``status_interval`` (60 s) and whenever it resumes,
* skips machines whose sandbox fault is ``down`` (and drops their
  connection), so the node lifecycle controller turns them NotReady; they
  resume when the fault is cleared,
* stops heartbeating a Node that was deleted (it does not re-create it).

Registration is a directory (the registry): ``edgeadm join`` writes
``<registry>/machines/<entry>.json`` (node name, server, certificate paths),
``edgeadm reset`` removes it; the service rescans when the directory changes
(checked every second). The registry survives restarts of the service.

Files of the service in the registry: ``heartbeat.pid`` (pid and start
time), ``status.json`` (counts, recent errors, memory; rewritten every 5 s).

Run: ``python -m penetrator_dev.sandbox.join.heartbeat --registry DIR
[--sandbox-state DIR]``; in the sandbox, start_sandbox_heartbeat() runs it in
the intranet's proxy namespace so it reaches the apiserver through NAT like
the machines do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from penetrator_dev.sandbox.join.http import (
    Connection,
    HttpError,
    limit_ssl_buffers,
    verified_context,
)
from penetrator_dev.sandbox.join.machine import write_file
from penetrator_dev.sandbox.join.node import ApiError, now_rfc3339, post_status, renew_lease

if TYPE_CHECKING:
    from penetrator_dev.sandbox.lifecycle import Sandbox
    from penetrator_dev.sandbox.state import ProcessRecord

MODULE = "penetrator_dev.sandbox.join.heartbeat"
PID_FILE = "heartbeat.pid"
STATUS_FILE = "status.json"
LEASE_INTERVAL_S = 10.0
STATUS_INTERVAL_S = 60.0
SCAN_INTERVAL_S = 1.0
PAUSED_CHECK_S = 1.0
ROLE = "heartbeat"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} heartbeat: {msg}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Member:
    """One joined machine: small state, one SSL context, one connection."""

    entry: str
    mtime_ns: int
    node: str
    uid: str | None
    ip: str | None
    arch: str
    fault_key: str | None  # "intranet/ip" in the sandbox's faults
    conn: Connection
    transition: str
    last_status: float = 0.0
    beats: int = 0
    failures: int = 0
    paused: bool = False
    gone: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class HeartbeatService:
    def __init__(
        self,
        registry: Path,
        sandbox_state: Path | None = None,
        *,
        lease_interval: float = LEASE_INTERVAL_S,
        status_interval: float = STATUS_INTERVAL_S,
        scan_interval: float = SCAN_INTERVAL_S,
    ) -> None:
        self.registry = registry
        self.machines_dir = registry / "machines"
        self.sandbox_state = sandbox_state
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self.scan_interval = scan_interval
        self.members: dict[str, Member] = {}
        self.down: set[str] = set()
        self.errors: deque[str] = deque(maxlen=20)
        self._dir_mtime = -1
        self._faults_mtime = -1
        self._contexts: dict[tuple[str, str, str], ssl.SSLContext] = {}
        self.started = time.time()

    # -- registry ---------------------------------------------------------------------------
    def scan(self) -> None:
        """Pick up new, changed and removed registry entries."""
        try:
            st = self.machines_dir.stat()
        except FileNotFoundError:
            st = None
        mtime = st.st_mtime_ns if st else 0
        if mtime == self._dir_mtime:
            return
        self._dir_mtime = mtime
        seen: dict[str, int] = {}
        if st is not None:
            with os.scandir(self.machines_dir) as it:
                for e in it:
                    if e.name.endswith(".json") and not e.name.startswith("."):
                        with contextlib.suppress(OSError):
                            seen[e.name] = e.stat().st_mtime_ns
        for name in list(self.members):
            if name not in seen:
                self._remove(name, "reset (left the registry)")
        for name, m in seen.items():
            cur = self.members.get(name)
            if cur is not None and cur.mtime_ns == m:
                continue
            if cur is not None:
                self._remove(name, "re-joined")
            self._add(name, m)

    def _add(self, name: str, mtime_ns: int) -> None:
        try:
            rec = json.loads((self.machines_dir / name).read_text())
            ctx = verified_context(Path(rec["ca"]).read_bytes(), rec["cert"], rec["key"])
        except (OSError, ValueError, KeyError, ssl.SSLError) as e:
            self._error(f"cannot load {name}: {e}")
            return
        fault_key = (
            f"{rec['intranet']}/{rec['ip']}" if rec.get("intranet") and rec.get("ip") else None
        )
        member = Member(
            entry=name,
            mtime_ns=mtime_ns,
            node=str(rec["node"]),
            uid=rec.get("uid"),
            ip=rec.get("ip"),
            arch=str(rec.get("arch", "amd64")),
            fault_key=fault_key,
            conn=Connection(str(rec["server"]), ctx, timeout=15),
            transition=str(rec.get("ready_since") or now_rfc3339()),
            # the join has just posted the status: the next one is due in a minute
            last_status=time.monotonic() if time.time() - rec.get("joined_at", 0) < 30 else 0.0,
        )
        self.members[name] = member
        member.task = asyncio.get_running_loop().create_task(self._beat(member))
        log(f"+ {member.node} ({member.ip or '-'}); {len(self.members)} machines")

    def _remove(self, name: str, why: str) -> None:
        m = self.members.pop(name)
        if m.task is not None:
            m.task.cancel()
        m.conn.abort()
        log(f"- {m.node}: {why}; {len(self.members)} machines")

    def read_faults(self) -> None:
        if self.sandbox_state is None:
            return
        path = self.sandbox_state / "state.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            self.down = set()
            return
        if mtime == self._faults_mtime:
            return
        self._faults_mtime = mtime
        try:
            faults = json.loads(path.read_text()).get("faults") or {}
        except (OSError, ValueError):
            return  # being rewritten: next time
        self.down = {k for k, v in faults.items() if v == "down"}

    def _error(self, msg: str) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {msg}")
        log(msg)

    # -- per machine ------------------------------------------------------------------------
    def is_down(self, m: Member) -> bool:
        return m.fault_key is not None and m.fault_key in self.down

    async def _beat(self, m: Member) -> None:
        await asyncio.sleep(random.uniform(0, self.lease_interval))  # noqa: S311 - spreading load
        while True:
            t0 = time.monotonic()
            if self.is_down(m):
                if not m.paused:
                    m.paused = True
                    m.conn.abort()  # a machine that is off holds no connection
                    log(f"{m.node}: machine down (fault): heartbeats paused")
                await asyncio.sleep(PAUSED_CHECK_S)
                continue
            try:
                if m.paused:
                    m.transition = now_rfc3339()
                    log(f"{m.node}: machine back: heartbeats resumed")
                if m.paused or m.failures or t0 - m.last_status >= self.status_interval:
                    await post_status(m.conn, m.node, m.ip, m.arch, m.transition)
                    m.last_status = time.monotonic()
                await renew_lease(m.conn, m.node, m.uid)
                m.paused = False
                m.beats += 1
                if m.failures:
                    log(f"{m.node}: heartbeats work again after {m.failures} failure(s)")
                m.failures = 0
            except ApiError as e:
                if e.status == 404 and "Node" in str(e):
                    m.gone = True
                    m.conn.abort()
                    self._error(f"{m.node}: the Node was deleted: no more heartbeats for it")
                    return
                m.failures += 1
                if m.failures in (1, 10) or m.failures % 100 == 0:
                    self._error(f"{m.node}: {e} (failure {m.failures})")
            except HttpError as e:
                m.failures += 1
                if m.failures in (1, 10) or m.failures % 100 == 0:
                    self._error(f"{m.node}: {e} (failure {m.failures})")
            delay = self.lease_interval - (time.monotonic() - t0)
            if m.failures:
                delay = min(self.lease_interval, 1.0 * m.failures)
            await asyncio.sleep(max(0.1, delay))

    # -- the service ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        ms = list(self.members.values())
        return {
            "pid": os.getpid(),
            "registry": str(self.registry),
            "machines": len(ms),
            "beating": sum(1 for m in ms if not (m.paused or m.gone) and m.beats),
            "paused": sorted(m.node for m in ms if m.paused),
            "gone": sorted(m.node for m in ms if m.gone),
            "failing": sorted(m.node for m in ms if m.failures),
            "connections": sum(1 for m in ms if m.conn.connected),
            "rss_kb": rss_kb(),
            "lease_interval": self.lease_interval,
            "status_interval": self.status_interval,
            "errors": list(self.errors),
            "updated": time.time(),
        }

    async def run(self, stop: asyncio.Event) -> None:
        self.registry.mkdir(parents=True, exist_ok=True)
        self.machines_dir.mkdir(parents=True, exist_ok=True)
        ticks = _start_ticks(os.getpid())
        write_file(self.registry / PID_FILE, f"{os.getpid()} {ticks}\n", 0o644)
        log(f"serving {self.registry} (pid {os.getpid()})")
        last_status = 0.0
        try:
            while not stop.is_set():
                self.read_faults()
                self.scan()
                if time.monotonic() - last_status > 5:
                    write_file(self.registry / STATUS_FILE, json.dumps(self.status()), 0o644)
                    last_status = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.scan_interval)
        finally:
            for name in list(self.members):
                m = self.members.pop(name)
                if m.task:
                    m.task.cancel()
                m.conn.abort()
            with contextlib.suppress(OSError):
                pid_file = self.registry / PID_FILE
                if pid_file.read_text().split()[0] == str(os.getpid()):
                    pid_file.unlink()
            log("stopped")


def _raise_nofile() -> None:
    """One socket per machine: lift the soft open-files limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _start_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


# ---------------------------------------------------------------- library: start / stop


def service_argv(
    registry: Path,
    sandbox_state: Path | None = None,
    *,
    lease_interval: float = LEASE_INTERVAL_S,
    status_interval: float = STATUS_INTERVAL_S,
    python: str | None = None,
) -> list[str]:
    """The command line of a heartbeat service serving `registry`."""
    argv = [python or sys.executable, "-m", MODULE, "--registry", str(registry)]
    if sandbox_state is not None:
        argv += ["--sandbox-state", str(sandbox_state)]
    argv += ["--lease-interval", str(lease_interval), "--status-interval", str(status_interval)]
    return argv


def service_pid(registry: Path) -> int | None:
    """PID of the running service of `registry` (checked against PID reuse)."""
    try:
        pid_s, ticks_s = (registry / PID_FILE).read_text().split()[:2]
        pid, ticks = int(pid_s), int(ticks_s)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if MODULE.encode() not in cmdline or _start_ticks(pid) != ticks:
        return None
    return pid


def service_status(registry: Path) -> dict[str, Any] | None:
    """The service's last status.json (None if it is not running)."""
    if service_pid(registry) is None:
        return None
    try:
        d: dict[str, Any] = json.loads((registry / STATUS_FILE).read_text())
        return d
    except (OSError, ValueError):
        return {}


def wait_started(registry: Path, proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = service_pid(registry)
        if pid is not None:
            return pid
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the heartbeat service exited with status {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"the heartbeat service of {registry} did not start within {timeout:.0f}s")


def start_service(
    registry: Path,
    *,
    sandbox_state: Path | None = None,
    namespace: str | None = None,
    log_file: Path | None = None,
    lease_interval: float = LEASE_INTERVAL_S,
    status_interval: float = STATUS_INTERVAL_S,
) -> int:
    """Start a heartbeat service for `registry` (inside network namespace
    `namespace` if given) in its own session; wait until it runs; return its
    PID. A service already running for `registry` is kept (idempotent)."""
    pid = service_pid(registry)
    if pid is not None:
        return pid
    registry.mkdir(parents=True, exist_ok=True)
    argv = service_argv(
        registry, sandbox_state, lease_interval=lease_interval, status_interval=status_interval
    )
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    log_path = log_file or registry / "heartbeat.log"
    with open(log_path, "ab") as f:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True
        )
    return wait_started(registry, proc)


def stop_service(registry: Path, timeout: float = 10) -> bool:
    """SIGTERM the service of `registry` (by its recorded PID), SIGKILL after
    `timeout`. True if one was running. The registry stays (a restarted
    service picks the machines up again)."""
    pid = service_pid(registry)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service_pid(registry) == pid:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if service_pid(registry) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
    (registry / PID_FILE).unlink(missing_ok=True)
    return True


# -------------------------------------------------------------- the sandbox's services


def sandbox_registry_dir(name: str, intranet: int) -> Path:
    """The registry of intranet `intranet` of sandbox `name` (where edgeadm
    join on its machines registers them)."""
    from penetrator_dev.sandbox.state import state_dir

    return state_dir(name) / "heartbeat" / str(intranet)


def start_sandbox_heartbeat(sb: Sandbox, intranet: int) -> ProcessRecord:
    """Start the heartbeat service of one intranet in its proxy namespace,
    recorded in the sandbox's state (`status` lists it, `down` stops it).
    Idempotent: a running one is returned."""
    from penetrator_dev.sandbox.state import ProcessRecord, state_dir

    role = f"{ROLE}-{intranet}"
    reg = sandbox_registry_dir(sb.name, intranet)
    pid = service_pid(reg)
    if pid is not None:
        ns = sb.topology.proxy_namespace(intranet)
        return ProcessRecord(role, ns, pid, _start_ticks(pid))
    reg.mkdir(parents=True, exist_ok=True)
    rec = sb.spawn(f"proxy-{intranet}", service_argv(reg, state_dir(sb.name)), role=role)
    wait_started(reg, None)
    return rec


def start_sandbox_heartbeats(sb: Sandbox) -> list[ProcessRecord]:
    """One heartbeat service per intranet of the sandbox."""
    return [start_sandbox_heartbeat(sb, it.index) for it in sb.topology.intranets]


def stop_sandbox_heartbeats(name: str, intranets: Sequence[int]) -> None:
    for k in intranets:
        stop_service(sandbox_registry_dir(name, k))


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    p.add_argument("--registry", required=True, type=Path)
    p.add_argument("--sandbox-state", type=Path, default=None)
    p.add_argument("--lease-interval", type=float, default=LEASE_INTERVAL_S)
    p.add_argument("--status-interval", type=float, default=STATUS_INTERVAL_S)
    a = p.parse_args(argv)
    limit_ssl_buffers()
    _raise_nofile()
    svc = HeartbeatService(
        a.registry,
        a.sandbox_state,
        lease_interval=a.lease_interval,
        status_interval=a.status_interval,
    )

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await svc.run(stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
