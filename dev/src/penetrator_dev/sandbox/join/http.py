"""A minimal HTTP/1.1 client over asyncio streams, with keep-alive.

Why not httpx: the heartbeat service holds one client identity per joined
machine (a thousand or more). An httpx client per identity costs a connection
pool, an SSL context and their buffers each; this is one SSL context and at
most one idle TLS connection per identity, and nothing else. The join program
uses the same client so there is one code path to trust.

Only what the Kubernetes API needs: JSON bodies, Content-Length or chunked
responses, one request at a time per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_BODY = 64 * 1024 * 1024


class HttpError(Exception):
    """The connection failed (not an HTTP status: those are in Response)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def message(self) -> str:
        """The Status message of an API error, else the start of the body."""
        try:
            doc = self.json()
        except ValueError:
            return self.body[:300].decode(errors="replace").strip()
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return str(doc["message"])
        return self.body[:300].decode(errors="replace").strip()


def split_server(server: str) -> tuple[str, int]:
    """`https://host:port`, `host:port` or `[v6]:port` -> (host, port)."""
    if "://" not in server:
        server = "https://" + server
    u = urlsplit(server)
    if u.scheme != "https" or not u.hostname:
        raise ValueError(f"not an https server address: {server!r}")
    return u.hostname, u.port or 443


class Connection:
    """One keep-alive connection to one server under one TLS identity.
    Reconnects when the server closed an idle connection."""

    def __init__(
        self,
        server: str,
        context: ssl.SSLContext,
        *,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> None:
        self.host, self.port = split_server(server)
        self.context = context
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.local_addr = local_addr
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def local_address(self) -> str | None:
        if self._writer is None:
            return None
        sock = self._writer.get_extra_info("sockname")
        return str(sock[0]) if sock else None

    async def _connect(self) -> None:
        hostname = self.host if self.context.check_hostname else None
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.context,
                    server_hostname=hostname or "",
                    local_addr=self.local_addr,
                    limit=1 << 16,
                ),
                self.timeout,
            )
        except ssl.SSLCertVerificationError as e:
            raise HttpError(
                f"TLS: the server's certificate is not trusted: {e.verify_message}"
            ) from None
        except (OSError, TimeoutError, ssl.SSLError) as e:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {_describe(e)}") from None

    async def close(self) -> None:
        w, self._reader, self._writer = self._writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(w.wait_closed(), 2)

    def abort(self) -> None:
        """Drop the connection at once (a machine that went down)."""
        w, self._reader, self._writer = self._writer, None, None
        if w is not None:
            w.transport.abort()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request and read its response. A kept-alive connection that
        the server closed meanwhile is reopened once."""
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        async with self._lock:
            for attempt in (0, 1):
                reused = self.connected
                if not reused:
                    await self._connect()
                try:
                    return await asyncio.wait_for(
                        self._exchange(method, path, data, content_type, headers), self.timeout
                    )
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError, _Closed) as e:
                    self.abort()
                    if reused and attempt == 0:
                        continue
                    raise HttpError(
                        f"{method} {path} on {self.host}:{self.port}: {_describe(e)}"
                    ) from None
                except TimeoutError:
                    self.abort()
                    raise HttpError(
                        f"{method} {path} on {self.host}:{self.port}: "
                        f"no answer within {self.timeout:.0f}s"
                    ) from None
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        method: str,
        path: str,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None,
    ) -> Response:
        assert self._reader is not None
        assert self._writer is not None
        h = {
            "Host": f"{self.host}:{self.port}",
            "Accept": "application/json",
            "User-Agent": "edgeadm-sandbox/penetrator",
            **self.headers,
            **(headers or {}),
        }
        if data or method in ("POST", "PUT", "PATCH"):
            h["Content-Type"] = content_type
            h["Content-Length"] = str(len(data))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self._writer.write(head.encode("latin-1") + b"\r\n" + data)
        await self._writer.drain()
        r = self._reader
        line = await r.readline()
        if not line:
            raise _Closed("the server closed the connection")
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise _Closed(f"not an HTTP response: {line[:60]!r}")
        status = int(parts[1])
        rh: dict[str, str] = {}
        while True:
            hl = await r.readline()
            if hl in (b"\r\n", b"\n", b""):
                break
            k, _, v = hl.decode("latin-1").partition(":")
            rh[k.strip().lower()] = v.strip()
        if rh.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            size = 0
            while True:
                n = int((await r.readline()).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while (await r.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size += n
                if size > MAX_BODY:
                    raise _Closed("response too large")
                chunks.append(await r.readexactly(n))
                await r.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in rh:
            n = int(rh["content-length"])
            if n > MAX_BODY:
                raise _Closed("response too large")
            body = await r.readexactly(n)
        else:
            body = await r.read(MAX_BODY)
            self.abort()
        if rh.get("connection", "").lower() == "close":
            self.abort()
        return Response(status, rh, body)


class _Closed(Exception):
    pass


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, asyncio.IncompleteReadError):
        return "the server closed the connection"
    text = str(e) or type(e).__name__
    return text


SSL_READ_BUFFER = 16 * 1024


def limit_ssl_buffers(size: int = SSL_READ_BUFFER) -> None:
    """Make asyncio's TLS transports allocate a `size` read buffer instead of
    256 KiB each (CPython 3.11+ allocates and touches it per connection, class
    attribute ``SSLProtocol.max_size``). For a process that keeps a thousand
    idle TLS connections this is the difference between ~290 and ~50 KiB per
    connection (measured); reads larger than `size` are simply done in pieces."""
    import asyncio.sslproto

    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = size


def insecure_context() -> ssl.SSLContext:
    """TLS without verifying the server: only for reading cluster-info, whose
    content is then verified by the token's signature and the CA pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def verified_context(
    ca_pem: bytes, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """TLS trusting only the cluster's CA (and presenting a client certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem.decode())
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
