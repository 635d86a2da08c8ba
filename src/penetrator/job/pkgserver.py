"""The package server: the proxy node serves the install packages read-only over
HTTP to the machines of its intranet, so a package is read once and each machine
pulls it over the LAN (checksum verified on arrival) instead of the job pushing
it through every machine's SSH connection.

It answers only ``GET``/``HEAD /pkg/<path token>/<sha256>`` for the configured
packages, with ``sendfile``. The packages are not secret, but the server is no open
service of the proxy node: it listens only on the proxy node's addresses that reach
the machines (``source_addresses``, never 0.0.0.0), the path holds a random token
made per server (so per Job) that only the machines are told, and at most
``max_connections`` are served at once (the others get 503 and retry or fall back).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from penetrator.api import check_ip
from penetrator.job.package import Package

REQUEST_LINE_RE = re.compile(
    rb"^(GET|HEAD) /pkg/([A-Za-z0-9_-]{1,64})/([0-9a-f]{64}) HTTP/1\.[01]\r?\n$"
)
MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
"""Default cap of connections served at once (the Job passes its own)."""
NOT_FOUND = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def source_addresses(ips: Iterable[str], port: int = 22) -> list[str]:
    """The local addresses the kernel picks to reach ``ips`` (the proxy node's
    intranet addresses), sorted; a UDP ``connect`` only routes, it sends nothing."""
    found: set[str] = set()
    for ip in ips:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.connect((ip, port))
            except OSError:
                continue  # no route: that machine cannot be reached anyway
            found.add(str(s.getsockname()[0]))
    return sorted(found)


@dataclass
class ServerStats:
    requests: int = 0
    served: int = 0  # complete GET responses
    bytes: int = 0
    refused: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)
    busy: int = 0  # refused over the connection cap


class PackageServer:
    """Listens on ``hosts`` (addresses, none of them a wildcard) and ``port``."""

    def __init__(
        self,
        packages: dict[str, Package],
        hosts: list[str],
        port: int = 0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        for h in hosts:
            if ipaddress.ip_address(h).is_unspecified:  # ValueError for a non-address
                raise ValueError(f"package server address {h!r}: a wildcard, not one address")
        if not hosts:
            raise ValueError("package server: no address reaches the machines")
        self._by_sha = {p.sha256: p for p in packages.values()}
        self._hosts, self._port = sorted(hosts), port
        self._server: asyncio.Server | None = None
        self.token = secrets.token_urlsafe(16)
        """The random path component: a URL is only known to the machines told it."""
        self.max_connections = max(1, max_connections)
        self._open = 0
        self.stats = ServerStats()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._hosts, self._port, backlog=1024
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return self._open

    def url(self, host: str, pkg: Package) -> str:
        """The package's URL for a machine that reaches us at ``host`` (an IP)."""
        problem = check_ip(host)
        if problem:
            raise ValueError(problem)
        h = f"[{host}]" if ":" in host else host
        return f"http://{h}:{self.port}/pkg/{self.token}/{pkg.sha256}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.requests += 1
        busy = self._open >= self.max_connections
        self._open += 0 if busy else 1
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                line, size = await _read_request(reader)
            if busy:  # the request is read first: closing on unread data resets it
                self.stats.busy += 1
                writer.write(BUSY)
                await writer.drain()
                return
            await self._serve(line, size, writer)
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._open -= 0 if busy else 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, line: bytes, size: int, writer: asyncio.StreamWriter) -> None:
        m = REQUEST_LINE_RE.match(line)
        token_ok = m is not None and secrets.compare_digest(m.group(2), self.token.encode())
        pkg = self._by_sha.get(m.group(3).decode()) if m and token_ok else None
        if m is None or pkg is None or size > MAX_HEADER_BYTES:
            self.stats.refused += 1
            writer.write(NOT_FOUND)
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {pkg.size}\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        if m.group(1) == b"GET":
            with pkg.path.open("rb") as f:
                sent = await asyncio.get_running_loop().sendfile(writer.transport, f)
            self.stats.bytes += sent
            self.stats.served += 1
            peer = str((writer.get_extra_info("peername") or ("?",))[0])
            self.stats.by_peer[peer] = self.stats.by_peer.get(peer, 0) + 1


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """The request line and the size of the head (the headers are skipped, bounded)."""
    line = await reader.readline()
    size = len(line)
    while True:
        h = await reader.readline()
        size += len(h)
        if h in (b"\r\n", b"\n", b"") or size > MAX_HEADER_BYTES:
            return line, size
