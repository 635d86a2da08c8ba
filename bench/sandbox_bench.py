"""Sandbox benchmarks (root): bring-up/down time and memory per machine for each
layout and size, concurrent SSH sessions and sustained sessions/second from the
proxy node. Never sends a packet outside the sandbox's own namespaces.

    .venv/bin/python bench/sandbox_bench.py                 # the full set
    .venv/bin/python bench/sandbox_bench.py --quick         # small sizes only
    .venv/bin/python bench/sandbox_bench.py --ssh-only 1000 # just the SSH figures

Writes bench/results/sandbox.csv and prints a markdown table.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from penetrator_dev.sandbox.lifecycle import (
    Sandbox,
    down,
    leftover_mounts,
    leftover_namespaces,
    leftover_pids,
)
from penetrator_dev.sandbox.sshprobe import run_probe
from penetrator_dev.sandbox.topology import Layout, SandboxSpec

RESULTS = Path(__file__).resolve().parent / "results" / "sandbox.csv"


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def pss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (sshd sessions)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def kernel_kib(m: dict[str, int]) -> int:
    return m.get("Slab", 0) + m.get("KernelStack", 0) + m.get("PageTables", 0)


def bring_up(name: str, layout: Layout, n: int) -> dict[str, Any]:
    down(name)
    m0 = meminfo()
    t0 = time.monotonic()
    sb = Sandbox.up(SandboxSpec(name=name, machines=n, layout=layout))
    up_s = time.monotonic() - t0
    time.sleep(1)
    m1 = meminfo()
    pids = leftover_pids(name)
    pss = pss_kib(pids)
    kern = kernel_kib(m1) - kernel_kib(m0)
    avail = m0["MemAvailable"] - m1["MemAvailable"]
    row = {
        "layout": layout.value,
        "machines": n,
        "up_s": round(up_s, 2),
        "processes": len(pids),
        "pss_kib_per_machine": round(pss / n, 1),
        "kernel_kib_per_machine": round(kern / n, 1),
        "memavailable_kib_per_machine": round(avail / n, 1),
    }
    t1 = time.monotonic()
    down(name)
    row["down_s"] = round(time.monotonic() - t1, 2)
    row["leftovers"] = (
        len(leftover_namespaces(name)) + len(leftover_pids(name)) + len(leftover_mounts(name))
    )
    del sb
    return row


def ssh_figures(name: str, n: int, clients: int, total: int) -> list[dict[str, Any]]:
    down(name)
    t0 = time.monotonic()
    sb = Sandbox.up(SandboxSpec(name=name, machines=n, layout=Layout.ADDRESSES))
    up_s = time.monotonic() - t0
    st = sb.status()["ssh"]
    ips = [m.ip for m in sb.topology.machines()]
    proxy = sb.topology.proxy_namespace(1)
    base = {
        "key_file": st["private_key"],
        "known_hosts": st["known_hosts"]["1"],
        "command": "echo $EDGE_MACHINE_IP",
        "timeout": 120,
    }
    rows: list[dict[str, Any]] = []
    try:
        # 200 sessions at once from the proxy node
        r = run_probe(proxy, dict(base, hosts=ips[:200], concurrency=200))
        wrong = sum(1 for x in r["results"] if x["ok"] and x["stdout"].strip() != x["host"])
        rows.append(
            {
                "test": "200 at once",
                "machines": n,
                "up_s": round(up_s, 2),
                "sessions": 200,
                "ok": r["ok"],
                "failed": r["failed"],
                "wrong_identity": wrong,
                "seconds": round(r["seconds"], 2),
                "per_s": round(200 / r["seconds"], 1),
                "max_session_s": round(max(x["seconds"] for x in r["results"]), 2),
            }
        )
        # sustained: `clients` probe processes in parallel, `total` sessions in all
        per = total // clients
        chunks = [[ips[(c * per + i) % len(ips)] for i in range(per)] for c in range(clients)]
        sshd = [p.pid for p in sb.state.processes if p.role == "sshd"]
        cpu_sshd0 = sum(cpu_s(p) for p in sshd)
        cpu_client0 = children_cpu_s()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(clients) as ex:
            outs = list(
                ex.map(lambda h: run_probe(proxy, dict(base, hosts=h, concurrency=50)), chunks)
            )
        secs = time.monotonic() - t0
        ok = sum(o["ok"] for o in outs)
        sshd_ms = (sum(cpu_s(p) for p in sshd) - cpu_sshd0) / (per * clients) * 1000
        client_ms = (children_cpu_s() - cpu_client0) / (per * clients) * 1000
        rows.append(
            {
                "test": f"sustained, {clients} clients x 50 concurrent",
                "machines": n,
                "up_s": round(up_s, 2),
                "sessions": per * clients,
                "ok": ok,
                "failed": per * clients - ok,
                "wrong_identity": 0,
                "seconds": round(secs, 2),
                "per_s": round(per * clients / secs, 1),
                "max_session_s": round(max(x["seconds"] for o in outs for x in o["results"]), 2),
                "sshd_cpu_ms_per_session": round(sshd_ms, 1),
                "client_cpu_ms_per_session": round(client_ms, 1),
            }
        )
    finally:
        t1 = time.monotonic()
        down(name)
        rows[-1]["down_s"] = round(time.monotonic() - t1, 2) if rows else None
        left = len(leftover_namespaces(name)) + len(leftover_pids(name))
        for row in rows:
            row["leftovers_after_down"] = left
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="bn")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ssh-only", type=int, default=0, help="machines for the SSH figures only")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--sessions", type=int, default=1000)
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    rows: list[dict[str, Any]] = []
    if not a.ssh_only:
        sizes = [(Layout.NETNS, 50), (Layout.ADDRESSES, 50), (Layout.ADDRESSES, 500)]
        if not a.quick:
            sizes = [
                (Layout.NETNS, 50),
                (Layout.NETNS, 200),
                (Layout.ADDRESSES, 50),
                (Layout.ADDRESSES, 500),
                (Layout.ADDRESSES, 1000),
            ]
        for layout, n in sizes:
            row = bring_up(a.name, layout, n)
            print(row, flush=True)
            rows.append(row)
        print(table(rows))
    ssh_n = a.ssh_only or (200 if a.quick else 1000)
    srows = ssh_figures(a.name, ssh_n, a.clients, a.sessions)
    print(table(srows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w", newline="") as f:
        for block in (rows, srows):
            if block:
                fields = list(dict.fromkeys(k for r in block for k in r))
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(block)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
