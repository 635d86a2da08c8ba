"""The package server: the proxy node serves the install packages read-only over
HTTP to the machines of its intranet, so a package is read once and each machine
pulls it over the LAN (checksum verified on arrival) instead of the job pushing
it through every machine's SSH connection.

It answers only ``GET``/``HEAD /pkg/<sha256>`` for the configured packages (the
packages are not secret; nothing else is reachable), with ``sendfile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from penetrator.api import check_ip
from penetrator.job.package import Package

REQUEST_LINE_RE = re.compile(rb"^(GET|HEAD) /pkg/([0-9a-f]{64}) HTTP/1\.[01]\r?\n$")
MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT = 10.0


@dataclass
class ServerStats:
    requests: int = 0
    served: int = 0  # complete GET responses
    bytes: int = 0
    refused: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)


class PackageServer:
    def __init__(self, packages: dict[str, Package], host: str = "0.0.0.0", port: int = 0) -> None:  # noqa: S104 - the machines of the intranet fetch from here
        self._by_sha = {p.sha256: p for p in packages.values()}
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.stats = ServerStats()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, backlog=1024
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

    def url(self, host: str, pkg: Package) -> str:
        """The package's URL for a machine that reaches us at ``host`` (an IP)."""
        problem = check_ip(host)
        if problem:
            raise ValueError(problem)
        h = f"[{host}]" if ":" in host else host
        return f"http://{h}:{self.port}/pkg/{pkg.sha256}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.requests += 1
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                line = await reader.readline()
                size = len(line)
                while True:  # skip the headers (bounded)
                    h = await reader.readline()
                    size += len(h)
                    if h in (b"\r\n", b"\n", b"") or size > MAX_HEADER_BYTES:
                        break
            m = REQUEST_LINE_RE.match(line)
            pkg = self._by_sha.get(m.group(2).decode()) if m else None
            if m is None or pkg is None or size > MAX_HEADER_BYTES:
                self.stats.refused += 1
                writer.write(
                    b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
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
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
