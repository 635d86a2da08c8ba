"""The package server (loopback only): serves exactly the configured packages, under its
random path token, on the addresses it is given, at most ``max_connections`` at once."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from penetrator.job.package import NO_DOWNLOADER, describe_package, pull_command
from penetrator.job.pkgserver import PackageServer, source_addresses


async def fetch(port: int, request: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(request)
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    return data


async def test_serves_only_configured_packages(tmp_path: Path) -> None:
    f = tmp_path / "p.tgz"
    f.write_bytes(b"x" * 100_000)
    pkg = describe_package("amd64", f)
    server = PackageServer({"amd64": pkg}, ["127.0.0.1"])
    await server.start()
    path = f"/pkg/{server.token}/{pkg.sha256}"
    try:
        ok = await fetch(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _, body = ok.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert b"Content-Length: 100000" in head
        assert body == f.read_bytes()
        head_only = await fetch(server.port, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        assert head_only.endswith(b"\r\n\r\n")
        tok = server.token.encode()
        for bad in [
            b"GET /pkg/" + pkg.sha256.encode() + b" HTTP/1.1\r\n\r\n",  # no token
            b"GET /pkg/wrong-token/" + pkg.sha256.encode() + b" HTTP/1.1\r\n\r\n",
            b"GET /pkg/" + tok + b"/" + b"0" * 64 + b" HTTP/1.1\r\n\r\n",
            b"GET /etc/passwd HTTP/1.1\r\n\r\n",
            b"GET /pkg/../" + pkg.sha256.encode() + b" HTTP/1.1\r\n\r\n",
            b"POST /pkg/" + pkg.sha256.encode() + b" HTTP/1.1\r\n\r\n",
            b"GET /pkg/" + pkg.sha256.encode() + b" HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
        ]:
            assert (await fetch(server.port, bad)).startswith(b"HTTP/1.0 404")
        assert server.stats.served == 1
        assert server.stats.bytes == 100_000
        assert server.stats.refused == 7
        assert server.url("10.10.0.2", pkg) == f"http://10.10.0.2:{server.port}{path}"
        assert server.url("fd00::2", pkg).startswith("http://[fd00::2]:")
        with pytest.raises(ValueError, match="not an IP"):
            server.url("10.0.0.2;id", pkg)
    finally:
        await server.close()


def test_each_server_has_its_own_token_and_never_a_wildcard_address(tmp_path: Path) -> None:
    f = tmp_path / "p.tgz"
    f.write_bytes(b"x")
    pkgs = {"amd64": describe_package("amd64", f)}
    a, b = PackageServer(pkgs, ["127.0.0.1"]), PackageServer(pkgs, ["127.0.0.1"])
    assert a.token != b.token
    assert len(a.token) >= 20
    for wildcard in ["0.0.0.0", "::"]:
        with pytest.raises(ValueError, match="wildcard"):
            PackageServer(pkgs, [wildcard])
    with pytest.raises(ValueError, match="no address"):
        PackageServer(pkgs, [])


def test_source_addresses_are_the_local_ends_of_the_routes() -> None:
    assert source_addresses(["127.0.0.1", "127.0.0.1"]) == ["127.0.0.1"]
    assert source_addresses(["127.0.0.2"]) == ["127.0.0.1"]


async def test_connections_over_the_cap_are_refused_busy(tmp_path: Path) -> None:
    f = tmp_path / "p.tgz"
    f.write_bytes(b"x" * 10)
    pkg = describe_package("amd64", f)
    server = PackageServer({"amd64": pkg}, ["127.0.0.1"], max_connections=1)
    await server.start()
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", server.port)
        w1.write(b"GET ")  # holds its slot: the server waits for the rest of the line
        await w1.drain()
        for _ in range(1000):  # until the server took it (an observable state)
            if server.open_connections == 1:
                break
            await asyncio.sleep(0.001)
        assert server.open_connections == 1
        assert (await fetch(server.port, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 503")
        assert server.stats.busy == 1
        w1.write(f"/pkg/{server.token}/{pkg.sha256} HTTP/1.0\r\n\r\n".encode())
        await w1.drain()
        assert (await asyncio.wait_for(r1.read(), 10)).endswith(b"x" * 10)
        w1.close()
    finally:
        await server.close()


def test_pull_command_quotes_and_reports_a_missing_downloader() -> None:
    cmd = pull_command("http://10.10.0.2:8080/pkg/ab", "/w/packages/x.tgz.part", 600)
    assert "curl -fsS --connect-timeout 10 --max-time 600 -o /w/packages/x.tgz.part" in cmd
    assert cmd.endswith(f"else exit {NO_DOWNLOADER}; fi")
    odd = pull_command("http://h/p", "/w/a b", 1)
    assert shlex.quote("/w/a b") in odd
