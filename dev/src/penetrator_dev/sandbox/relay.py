"""A small TCP relay, run as its own process (stdlib only, so it starts fast).

Two uses:
- the host's port forwarder to the cloud's apiserver address: it listens on
  127.0.0.1:PORT in the host's namespace, then moves itself into the cloud's
  network namespace (setns) so every outgoing socket is created there; the
  host's routes are never touched;
- the "slow" fault: inside a machine namespace, nft DNATs port 22 of a slow
  machine to this relay, which connects to the same address's port 22 and
  delays every chunk in both directions.

    python -m penetrator_dev.sandbox.relay --sandbox-name NAME --listen 127.0.0.1:0 \
        --connect 172.31.0.1:6443 --connect-netns /run/netns/NAME-cloud --port-file F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time

CLONE_NEWNET = 0x40000000
CHUNK = 65536


def setns(path: str) -> None:
    """Move this process (single-threaded at this point) into a network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def parse_hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader -> writer, each chunk delivered `delay` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    task = asyncio.create_task(pump())
    try:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    finally:
        task.cancel()


async def _handle(
    r1: asyncio.StreamReader,
    w1: asyncio.StreamWriter,
    target: tuple[str, int] | None,
    target_port: int,
    delay: float,
) -> None:
    try:
        if target is None:  # same address as the one the client connected to
            local = w1.get_extra_info("sockname")[0]
            target = (local, target_port)
        r2, w2 = await asyncio.wait_for(asyncio.open_connection(*target), timeout=10)
    except (OSError, TimeoutError):
        w1.close()
        return
    try:
        await asyncio.gather(_pipe(r1, w2, delay), _pipe(r2, w1, delay))
    except (OSError, ConnectionError):
        pass
    finally:
        for w in (w1, w2):
            with contextlib.suppress(Exception):
                w.close()


def _write_port(path: str, port: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


async def serve(args: argparse.Namespace) -> None:
    host, port = parse_hostport(args.listen)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(1024)
    lsock.setblocking(False)
    if args.connect_netns:
        setns(args.connect_netns)  # the listening socket stays where it was made
    target = parse_hostport(args.connect) if args.connect else None
    delay = args.delay_ms / 1000.0
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, target, args.connect_port, delay), sock=lsock
    )
    if args.port_file:
        _write_port(args.port_file, lsock.getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="penetrator_dev.sandbox.relay")
    p.add_argument("--sandbox-name", required=True, help="marks the process as the sandbox's")
    p.add_argument("--role", default="relay")
    p.add_argument("--listen", required=True, help="HOST:PORT (port 0: any free port)")
    p.add_argument("--connect", default="", help="HOST:PORT; default: the local address")
    p.add_argument("--connect-port", type=int, default=22)
    p.add_argument("--connect-netns", default="", help="/run/netns/NAME for outgoing sockets")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--port-file", default="")
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
