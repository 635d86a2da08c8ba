"""Run one command over SSH on many machines at once (asyncssh), or try TCP
connections (``"mode": "tcp"``, see tcp_check), from inside a
namespace: ``ip netns exec <proxy ns> python -m penetrator_dev.sandbox.sshprobe``.
Used by the tests and the benchmarks. Reads a JSON request on stdin, writes a
JSON report on stdout::

    {"hosts": ["10.10.1.1", ...], "port": 22, "username": "root",
     "password_file": "...", "key_file": "...", "known_hosts": "..." | null,
     "command": "echo $EDGE_MACHINE_IP", "concurrency": 200, "timeout": 30,
     "repeat": 1}

    {"results": [{"host", "ok", "exit", "stdout", "stderr", "error", "seconds"}],
     "seconds": total, "ok": n_ok, "failed": n_failed}
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from penetrator_dev.sandbox.network import exec_argv


async def _one(
    host: str, req: dict[str, Any], password: str | None, sem: asyncio.Semaphore
) -> dict[str, Any]:
    import asyncssh

    opts: dict[str, Any] = {
        "port": int(req.get("port", 22)),
        "username": req.get("username", "root"),
        "known_hosts": req.get("known_hosts"),
        "connect_timeout": float(req.get("timeout", 30)),
        "login_timeout": float(req.get("timeout", 30)),
    }
    if password is not None:
        opts["password"] = password
        opts["client_keys"] = None
        opts["preferred_auth"] = "password"
    if req.get("key_file"):
        opts["client_keys"] = [req["key_file"]]
        opts["preferred_auth"] = "publickey"
    if req.get("password_file") and req.get("key_file"):
        opts["preferred_auth"] = "publickey,password"
    async with sem:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(float(req.get("timeout", 30)) + 5):
                async with asyncssh.connect(host, **opts) as conn:
                    r = await conn.run(req.get("command", "true"), check=False)
            return {
                "host": host,
                "ok": r.exit_status == 0,
                "exit": r.exit_status,
                "stdout": str(r.stdout or ""),
                "stderr": str(r.stderr or ""),
                "error": None,
                "seconds": time.monotonic() - t0,
            }
        except (OSError, asyncssh.Error, TimeoutError) as e:
            return {
                "host": host,
                "ok": False,
                "exit": None,
                "stdout": "",
                "stderr": "",
                "error": f"{type(e).__name__}: {e}",
                "seconds": time.monotonic() - t0,
            }


async def _tcp(host: str, port: int, limit: float) -> str:
    """ok | refused | timeout | unreachable | error: ..."""
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "unreachable" if e.errno in (101, 113) else f"error: {e}"
    w.close()
    return "ok"


async def tcp_probe(req: dict[str, Any]) -> dict[str, Any]:
    """{"mode": "tcp", "targets": [[host, port], ...], "timeout": s} ->
    {"results": {"host:port": "ok" | "refused" | "timeout" | "unreachable"}}"""
    targets = [(str(h), int(p)) for h, p in req["targets"]]
    t = float(req.get("timeout", 2))
    res = await asyncio.gather(*(_tcp(h, p, t) for h, p in targets))
    return {"results": {f"{h}:{p}": r for (h, p), r in zip(targets, res, strict=True)}}


def read_password(req: dict[str, Any]) -> str | None:
    return Path(req["password_file"]).read_text().strip() if req.get("password_file") else None


async def probe(req: dict[str, Any], pw: str | None) -> dict[str, Any]:
    sem = asyncio.Semaphore(int(req.get("concurrency", 100)))
    hosts = list(req["hosts"]) * int(req.get("repeat", 1))
    t0 = time.monotonic()
    results = await asyncio.gather(*(_one(h, req, pw, sem) for h in hosts))
    ok = sum(1 for r in results if r["ok"])
    return {
        "results": results,
        "seconds": time.monotonic() - t0,
        "ok": ok,
        "failed": len(results) - ok,
    }


def tcp_check(namespace: str, targets: list[tuple[str, int]], timeout: float = 2) -> dict[str, str]:
    """From inside `namespace`, try a TCP connection to each (host, port):
    {"host:port": "ok" | "refused" | "timeout" | "unreachable" | "error: ..."}."""
    req = {"mode": "tcp", "targets": [list(t) for t in targets], "timeout": timeout}
    out: dict[str, str] = run_probe(namespace, req, timeout=timeout + 30)["results"]
    return out


def run_probe(namespace: str, req: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run a probe inside `namespace` (a subprocess) and return its report."""
    cp = subprocess.run(
        exec_argv(namespace, [sys.executable, "-m", "penetrator_dev.sandbox.sshprobe"]),
        input=json.dumps(req),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"sshprobe failed ({cp.returncode}): {cp.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(cp.stdout)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    req = json.loads(sys.stdin.read())
    if req.get("mode") == "tcp":
        json.dump(asyncio.run(tcp_probe(req)), sys.stdout)
    else:
        json.dump(asyncio.run(probe(req, read_password(req))), sys.stdout)


if __name__ == "__main__":
    main()
