"""Heartbeat service and join figures against the real control plane (loopback).

Joins N machines by running the join logic in-process (the same code as
`edgeadm join`: token discovery, CSR approved and signed by the controller
manager, Node + Lease), hands them to one heartbeat service process, and
measures once every machine beats:

* the service's RSS/PSS and CPU, and its TLS connections,
* the apiserver's, etcd's and the controller manager's RSS,
* `kubectl get nodes` latency (median/max of 5),
* time from `edgeadm join` start (a real subprocess) to Node Ready.

    .venv/bin/python bench/heartbeat_bench.py --sizes 100,1000

Writes bench/results/heartbeat.csv and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.bootstrap import join
from penetrator_dev.sandbox.join.config import JoinParams
from penetrator_dev.sandbox.join.discovery import Token
from penetrator_dev.sandbox.join.machine import MachineContext
from penetrator_dev.testenv.bootstrap import create_bootstrap_token
from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions

RESULTS = Path(__file__).resolve().parent / "results" / "heartbeat.csv"


def mem_kib(pid: int, field: str) -> int:
    path = f"/proc/{pid}/smaps_rollup" if field == "Pss" else f"/proc/{pid}/status"
    key = "Pss:" if field == "Pss" else "VmRSS:"
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def component_pid(cp: ControlPlane, name: str) -> int:
    return next(p.pid for p in cp.state.processes if p.component == name)


async def join_many(
    cp: ControlPlane, state: Path, start: int, count: int, token: Token, concurrency: int
) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    server = cp.server.split("//", 1)[1]
    times: list[float] = []

    async def one(i: int) -> None:
        ip = f"10.10.{1 + (i - 1) // 250}.{1 + (i - 1) % 250}"
        d = state / "machines" / "1" / ip
        d.mkdir(parents=True, exist_ok=True)
        m = MachineContext(d, ip, state / "heartbeat" / "1", 1)
        params = JoinParams(server, token, token, (cp.ca_cert_hash,), f"bench-{i:05d}")
        async with sem:
            r = await join(params, m, lambda _msg: None)
        times.append(r.seconds)

    await asyncio.gather(*(one(i) for i in range(start, start + count)))
    return times


def kubectl_latency(cp: ControlPlane, runs: int = 5) -> tuple[float, float, int]:
    out = []
    n = 0
    for _ in range(runs):
        t0 = time.monotonic()
        p = cp.kubectl("get", "nodes", "--no-headers", check=False, timeout=60)
        out.append(time.monotonic() - t0)
        if p.returncode != 0:
            print(f"kubectl get nodes failed: {p.stderr.strip()}", flush=True)
            continue
        n = len(p.stdout.splitlines())
    return statistics.median(out), max(out), n


def ready_count(cp: ControlPlane) -> tuple[int, int]:
    p = cp.kubectl("get", "nodes", "-o", "json", check=False, timeout=60)
    if p.returncode != 0:
        return -1, -1
    items = json.loads(p.stdout)["items"]
    ready = 0
    for n in items:
        for c in n["status"].get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                ready += 1
    return ready, len(items)


def join_to_ready(cp: ControlPlane, state: Path, token: Token, i: int) -> float:
    """A real `edgeadm join` subprocess; seconds until the Node's Ready=True."""
    ip = f"10.20.0.{i}"
    d = state / "machines" / "1" / ip
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EDGE_MACHINE_DIR": str(d), "EDGE_MACHINE_IP": ip}
    name = f"bench-sub-{i}"
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "penetrator_dev.sandbox.join", "join", cp.server.split("//")[1],
         "--token", token.value, "--discovery-token-ca-cert-hash", cp.ca_cert_hash,
         "--node-name", name],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    while True:
        p = cp.kubectl(
            "get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )  # fmt: skip
        if p.stdout.strip() == "True":
            return time.monotonic() - t0
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--settle", type=float, default=40.0, help="seconds of steady state")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="hb-bench-"))
    state = root / "sandbox-bench"
    reg = state / "heartbeat" / "1"
    with ControlPlane(ControlPlaneOptions(die_with_parent=True)) as cp:
        tok = create_bootstrap_token(cp)
        token = Token(tok.token_id, tok.token_secret)
        pid = hb.start_service(reg, sandbox_state=state)
        try:
            sub = [join_to_ready(cp, state, token, i) for i in range(1, 4)]
            print(f"edgeadm join -> Node Ready: {[f'{s:.2f}' for s in sub]} s", flush=True)
            joined = 3
            for size in sizes:
                t0 = time.monotonic()
                times = asyncio.run(
                    join_many(cp, state, joined - 2, size - joined, token, a.concurrency)
                )
                join_wall = time.monotonic() - t0
                joined = size
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    st = hb.service_status(reg) or {}
                    if st.get("beating") == size:
                        break
                    time.sleep(1)
                c0, w0 = cpu_s(pid), time.monotonic()
                time.sleep(a.settle)
                cpu = (cpu_s(pid) - c0) / (time.monotonic() - w0)
                st = hb.service_status(reg) or {}
                med, worst, n = kubectl_latency(cp)
                ready, total = ready_count(cp)
                row = {
                    "machines": size,
                    "join_wall_s": round(join_wall, 1),
                    "join_median_s": round(statistics.median(times), 2) if times else "",
                    "joins_per_s": round(len(times) / join_wall, 1) if times else "",
                    "edgeadm_to_ready_s": round(statistics.median(sub), 2),
                    "service_rss_mib": round(mem_kib(pid, "Rss") / 1024, 1),
                    "service_pss_mib": round(mem_kib(pid, "Pss") / 1024, 1),
                    "service_kib_per_machine": round(mem_kib(pid, "Rss") / size, 1),
                    "service_cpu_pct": round(100 * cpu, 1),
                    "connections": st.get("connections"),
                    "beating": st.get("beating"),
                    "ready": f"{ready}/{total}",
                    "apiserver_rss_mib": round(
                        mem_kib(component_pid(cp, "kube-apiserver"), "Rss") / 1024
                    ),
                    "etcd_rss_mib": round(mem_kib(component_pid(cp, "etcd"), "Rss") / 1024),
                    "kcm_rss_mib": round(
                        mem_kib(component_pid(cp, "kube-controller-manager"), "Rss") / 1024
                    ),
                    "get_nodes_median_s": round(med, 2),
                    "get_nodes_max_s": round(worst, 2),
                    "load_avg_1m": round(os.getloadavg()[0], 1),
                    "nodes_listed": n,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            hb.stop_service(reg)
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
