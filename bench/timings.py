"""Benchmark (not a test): the durations the tests used to assert, measured here
instead, so a busy machine slows a number down and never fails a test.

    .venv/bin/python bench/timings.py [--repeat 3] [--sandbox]

- control plane start: a second Go-built control plane from nothing to serving
  (tests/e2e/test_testenv.py starts one beside the session's);
- relay round trip: 5 bytes through the sandbox's delaying relay at 100 ms each
  way, loopback (tests/unit/test_sandbox_parts.py checks the delays, not the time);
- API out of reach: the job's Kubernetes client giving up on an API server nobody
  listens for, with a 2 s budget (tests/e2e/test_job_cluster.py checks it retried);
- sandbox up (with --sandbox, root): `penetrator-dev sandbox up -n 2 --routed`, the
  command the README gives (tests/e2e/test_sandbox_lifecycle.py).

The 1,000-machine bring-up is bench/sandbox_bench.py's, joins are
bench/join_sandbox_bench.py's and the job's runs bench/job_bench.py's.
Appends one row per measurement to bench/results/timings.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from penetrator.job.cluster import Cluster, ClusterError
from penetrator_dev.sandbox import relay
from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "timings.csv"
DELAY_S = 0.1


def control_plane_start() -> float:
    cp = ControlPlane(ControlPlaneOptions(die_with_parent=True))
    t0 = time.monotonic()
    cp.start()
    took = time.monotonic() - t0
    cp.stop()
    return took


async def _relay_round_trip() -> float:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.read(100))
        await w.drain()
        w.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await relay._handle(r, w, ("127.0.0.1", bport), 22, DELAY_S)

    front = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with backend, front:
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
        w.write(b"hello")
        await w.drain()
        await asyncio.wait_for(r.read(100), 5)
        took = time.monotonic() - t0
        w.close()
    return took


def relay_round_trip() -> float:
    return asyncio.run(_relay_round_trip())


async def _api_out_of_reach(kubeconfig: Path) -> float:
    c = Cluster.from_kubeconfig(kubeconfig, interval=0.3)
    try:
        t0 = time.monotonic()
        try:
            await c.get_node("nobody", 2)
        except ClusterError:
            return time.monotonic() - t0
        raise RuntimeError("an API server answered on a port nobody listens on")
    finally:
        await c.close()


def api_out_of_reach(admin_kubeconfig: Path) -> float:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    kc = yaml.safe_load(admin_kubeconfig.read_text())
    kc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "kubeconfig"
        path.write_text(yaml.safe_dump(kc))
        path.chmod(0o600)
        return asyncio.run(_api_out_of_reach(path))


def sandbox_up() -> float:
    cli = [str(Path(sys.executable).parent / "penetrator-dev"), "sandbox"]
    name = f"tb{os.getpid() % 10000}"
    t0 = time.monotonic()
    try:
        subprocess.run([*cli, "up", "--name", name, "-n", "2", "--routed"],
                       capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
        return time.monotonic() - t0
    finally:
        subprocess.run([*cli, "down", "--name", name], capture_output=True, timeout=300,
                       check=False)  # fmt: skip


def measure(name: str, run: Callable[[], float], repeat: int) -> dict[str, str]:
    runs = [run() for _ in range(repeat)]
    row = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "measurement": name,
        "runs": str(repeat),
        "median_s": f"{statistics.median(runs):.3f}",
        "max_s": f"{max(runs):.3f}",
        "load1": f"{os.getloadavg()[0]:.2f}",
        "cpus": str(os.cpu_count()),
    }
    print(f"| {name} | {row['median_s']} | {row['max_s']} | {row['load1']} |", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sandbox", action="store_true", help="also `sandbox up` (root)")
    args = ap.parse_args()
    print("| measurement | median s | max s | load1 |\n|---|---|---|---|")
    rows = [
        measure("control plane start", control_plane_start, args.repeat),
        measure("relay round trip (100 ms each way)", relay_round_trip, args.repeat),
    ]
    cp = ControlPlane(ControlPlaneOptions(die_with_parent=True))
    cp.start()
    try:

        def out_of_reach() -> float:
            return api_out_of_reach(Path(cp.kubeconfig))

        rows.append(measure("API out of reach, 2 s budget", out_of_reach, args.repeat))
    finally:
        cp.stop()
    if args.sandbox:
        rows.append(measure("sandbox up -n 2 --routed (CLI)", sandbox_up, args.repeat))
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
