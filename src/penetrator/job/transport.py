"""SSH transport: one asyncssh connection per machine, host keys checked inside
the handshake (before any credential is sent), per-step timeouts, keepalives,
and the classification of errors into transient (retried) and final.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from penetrator.api import machine_text
from penetrator.api.jobconfig import JobConfig, Machine
from penetrator.job.credentials import Credentials
from penetrator.job.hostkeys import HostKeyError, HostKeyStore, Verdict
from penetrator.job.redact import Redactor
from penetrator.job.template import command_words

T = TypeVar("T")

TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EPIPE,
    }
)
STDERR_TAIL = 160
SFTP_BLOCK = 64 * 1024
SFTP_REQUESTS = 16
"""At most 1 MiB in flight per push (memory stays bounded with many pushes)."""


class StepTimeout(Exception):
    """A step ran out of its time. Only a connect timeout is transient."""

    def __init__(self, step: str, seconds: float) -> None:
        self.step, self.seconds = step, seconds
        super().__init__(f"{step} timed out after {seconds:g}s")


class RemoteCommandFailed(Exception):
    """A remote command exited non-zero (final: an install is not retried blindly)."""

    def __init__(self, step: str, command: str, exit_status: int | None, stderr: str) -> None:
        self.step, self.exit_status = step, exit_status
        what = command_words(command)
        tail = " ".join(stderr.split())[-STDERR_TAIL:]
        status = "was killed" if exit_status is None else f"exited {exit_status}"
        super().__init__(
            f"{step} failed: `{' '.join(what)}` {status}" + (f": {tail}" if tail else "")
        )


class MachineError(Exception):
    """A final, clear, per-machine error (unsupported arch, missing package...)."""


def is_transient(exc: BaseException) -> bool:
    """Refused, timed-out connect, reset, connection lost: yes. Authentication,
    host key, a failing install, a step timeout after connecting: no."""
    if isinstance(exc, StepTimeout):
        return exc.step == "connect"
    if isinstance(exc, HostKeyError | asyncssh.PermissionDenied | asyncssh.HostKeyNotVerifiable):
        return False
    if isinstance(exc, asyncssh.ConnectionLost):
        return True
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.code in (
            asyncssh.DISC_CONNECTION_LOST,
            asyncssh.DISC_TOO_MANY_CONNECTIONS,
            asyncssh.DISC_SERVICE_NOT_AVAILABLE,
        )
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError):
        return True
    if isinstance(exc, BrokenPipeError):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    return isinstance(exc, TimeoutError)


def describe(exc: BaseException, port: int, redactor: Redactor) -> str:
    """A short, clear, credential-free message for a result."""
    if isinstance(exc, asyncssh.PermissionDenied):
        text = "authentication failed: the credential was refused"
    elif isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ):
        text = f"connection refused on port {port}"
    elif isinstance(exc, ConnectionResetError):
        text = "connection reset by the machine"
    elif isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        text = f"machine unreachable: {exc.strerror}"
    elif isinstance(exc, asyncssh.ConnectionLost):
        text = f"connection lost: {exc.reason}"
    elif isinstance(exc, asyncssh.DisconnectError):
        text = f"ssh disconnected: {exc.reason}"
    elif isinstance(exc, StepTimeout | HostKeyError | RemoteCommandFailed | MachineError):
        text = str(exc)
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return machine_text(redactor.scrub(text))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential with full jitter in [d/2, d], d = min(cap, base * 2**(attempt-1))."""
    d: float = min(cap, base * 2.0 ** max(0, attempt - 1))
    return d / 2 + rng.random() * d / 2


async def with_timeout(
    step: str, seconds: float, aw: Awaitable[T], shown: float | None = None
) -> T:
    """``aw`` within ``seconds``; any timeout (also one raised inside) becomes
    StepTimeout(step, shown or seconds)."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise StepTimeout(step, seconds if shown is None else shown) from None


class _Client(asyncssh.SSHClient):
    def __init__(self, store: HostKeyStore, machine: Machine, port: int) -> None:
        self._store, self._machine, self._port = store, machine, port
        self.verdict: Verdict | None = None
        self.refusal: HostKeyError | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        try:
            self.verdict = self._store.check(self._machine.name, self._machine.ip, self._port, key)
        except HostKeyError as e:
            self.refusal = e
            return False
        return True


@dataclass
class Session:
    """One machine's connection; every step runs over it."""

    conn: asyncssh.SSHClientConnection
    verdict: Verdict
    redactor: Redactor

    async def run(self, step: str, command: str, limit: float, *, input: str | None = None) -> str:
        """Run a command; its stdout, or RemoteCommandFailed (stderr scrubbed)."""
        if command in self.redactor:
            raise MachineError(f"{step}: refusing to run a command that contains a secret")
        r = await with_timeout(step, limit, self.conn.run(command, input=input, check=False))
        if r.exit_status != 0:
            raise RemoteCommandFailed(
                step, command, r.exit_status, self.redactor.scrub(str(r.stderr or ""))
            )
        return str(r.stdout or "")

    async def put(self, step: str, local: str, remote: str, limit: float) -> None:
        async def go() -> None:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(local, remote, block_size=SFTP_BLOCK, max_requests=SFTP_REQUESTS)

        await with_timeout(step, limit, go())

    def local_address(self) -> str:
        """Our address as the machine sees it (the proxy node's, on its LAN)."""
        sockname = self.conn.get_extra_info("sockname")
        return str(sockname[0]) if sockname else ""

    def close(self) -> None:
        self.conn.close()


def connect_options(cfg: JobConfig, creds: Credentials) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "port": cfg.ssh_port,
        "username": cfg.ssh_user,
        "known_hosts": ([], [], []),  # every key goes through _Client.validate_host_public_key
        "config": [],  # never read ~/.ssh/config
        "agent_path": None,
        "connect_timeout": cfg.timeouts.connect,
        "login_timeout": cfg.timeouts.connect,
        "keepalive_interval": cfg.keepalive or None,
        "keepalive_count_max": 3,
    }
    if creds.password is not None:
        opts.update(password=creds.password, client_keys=None, preferred_auth="password")
    else:
        opts.update(client_keys=[creds.key], preferred_auth="publickey")
    return opts


async def connect(
    cfg: JobConfig,
    machine: Machine,
    creds: Credentials,
    store: HostKeyStore,
    opener: Callable[..., Awaitable[tuple[asyncssh.SSHClientConnection, asyncssh.SSHClient]]]
    | None = None,
) -> Session:
    """Open the machine's connection (host key checked before authentication)."""
    client = _Client(store, machine, cfg.ssh_port)
    open_ = opener or asyncssh.create_connection
    try:
        conn, _ = await with_timeout(
            "connect",
            cfg.timeouts.connect + 1,
            open_(lambda: client, machine.ip, **connect_options(cfg, creds)),
            shown=cfg.timeouts.connect,
        )
    except asyncssh.HostKeyNotVerifiable:
        if client.refusal is not None:
            raise client.refusal from None
        raise
    if client.verdict is None:  # asyncssh did not ask us: never accept that silently
        conn.close()
        raise MachineError("the host key was not checked; refusing the connection")
    return Session(conn, client.verdict, creds.redactor)
