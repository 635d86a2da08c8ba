"""Join N sandbox machines over SSH (root, needs the sandbox's cluster): from the
proxy node's namespace, asyncssh sends the join package and a
JoinConfiguration to every machine, unpacks it and runs ``./edgeadm join
--config``; the machines reach the apiserver in the cloud through NAT, and the
intranet's heartbeat service (in the proxy namespace, also behind NAT) keeps
them Ready.

    .venv/bin/python bench/join_sandbox_bench.py --machines 1000 --concurrency 50

Prints one JSON line and appends it to bench/results/join_sandbox.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from penetrator.k8s.bootstrap_token import BootstrapToken, bootstrap_token_secret
from penetrator_dev.sandbox.cluster import start_cluster
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import build_join_packages
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.network import exec_argv
from penetrator_dev.sandbox.topology import Layout, SandboxSpec

RESULTS = Path(__file__).resolve().parent / "results" / "join_sandbox.csv"

INSTALLER = r"""
import asyncio, json, resource, sys, time
import asyncssh

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
req = json.load(sys.stdin)
data = open(req["package"], "rb").read()
sem = asyncio.Semaphore(req["concurrency"])

async def one(m):
    async with sem:
        t0 = time.monotonic()
        try:
            async with asyncssh.connect(
                m["ip"], username="root", client_keys=[req["key"]],
                known_hosts=req["known_hosts"], connect_timeout=60,
            ) as c:
                await c.run("cat > edgeadm.tar.gz", input=data, encoding=None, check=True)
                await c.run("umask 077; cat > join.yaml", input=m["config"], check=True)
                r = await c.run(
                    "mkdir -p e && tar -xzf edgeadm.tar.gz -C e && ./e/edgeadm join "
                    "--config join.yaml", check=False)
                return {"ip": m["ip"], "exit": r.exit_status, "err": r.stderr[-300:],
                        "s": time.monotonic() - t0}
        except Exception as e:
            return {"ip": m["ip"], "exit": None, "err": repr(e)[:300],
                    "s": time.monotonic() - t0}

async def main():
    json.dump(await asyncio.gather(*(one(m) for m in req["machines"])), sys.stdout)

asyncio.run(main())
"""


def pid_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--name", default="hbb")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    spec = SandboxSpec(name=a.name, machines=a.machines, layout=Layout.ADDRESSES)
    t0 = time.monotonic()
    sb = Sandbox.up(spec)
    info = start_cluster(sb)
    up_s = time.monotonic() - t0
    try:
        rec = hb.start_sandbox_heartbeat(Sandbox.load(sb.name), 1)

        def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(info.kubectl_binary), f"--kubeconfig={info.kubeconfig}", *args],
                input=input, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip

        token = BootstrapToken.generate(dt.datetime.now(dt.UTC), dt.timedelta(hours=1))
        kubectl("apply", "-f", "-", input=yaml.safe_dump(bootstrap_token_secret(token, "bench")))
        pkg = build_join_packages(Path(tempfile.mkdtemp(prefix="pkg-")))["amd64"]
        server = str(info.server).split("//", 1)[1]
        machines = []
        for m in sb.topology.intranet(1).machines:
            cfg = {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "JoinConfiguration",
                "discovery": {
                    "bootstrapToken": {
                        "apiServerEndpoint": server,
                        "token": token.value,
                        "caCertHashes": [info.ca_cert_hash],
                    }
                },
                "nodeRegistration": {"name": f"hbb-{m.index:05d}"},
            }
            machines.append({"ip": m.ip, "config": yaml.safe_dump(cfg)})
        ssh = sb.status()["ssh"]
        req = {
            "key": ssh["private_key"],
            "known_hosts": ssh["known_hosts"]["1"],
            "package": str(pkg.path),
            "concurrency": a.concurrency,
            "machines": machines,
        }
        t1 = time.monotonic()
        p = subprocess.run(
            exec_argv(sb.topology.proxy_namespace(1), [sys.executable, "-c", INSTALLER]),
            input=json.dumps(req), capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        if p.returncode != 0:
            raise SystemExit(p.stderr[-3000:])
        res = json.loads(p.stdout)
        join_wall = time.monotonic() - t1
        failed = [r for r in res if r["exit"] != 0]
        for r in failed[:5]:
            print("failed:", r, file=sys.stderr)
        jsonpath = "{range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}"
        deadline = time.monotonic() + 300
        ready = 0
        while time.monotonic() < deadline:
            out = kubectl("get", "nodes", "-l", "kubernetes.io/os=linux", "-o",
                          f"jsonpath={jsonpath}").stdout  # fmt: skip
            ready = sum(1 for line in out.splitlines() if line == "True")
            if ready >= len(res) - len(failed):
                break
            time.sleep(2)
        all_ready = time.monotonic() - t1
        time.sleep(30)  # steady state: every lease renewed at least twice
        lat, lat_cloud = [], []
        in_cloud = exec_argv(
            sb.topology.cloud.namespace,
            [str(info.kubectl_binary), f"--kubeconfig={info.in_cloud_kubeconfig}"],
        )
        for _ in range(10):
            t = time.monotonic()
            kubectl("get", "nodes", "--no-headers")
            lat.append(time.monotonic() - t)
            t = time.monotonic()
            subprocess.run([*in_cloud, "get", "nodes", "--no-headers"], capture_output=True,
                           check=False, timeout=120)  # fmt: skip
            lat_cloud.append(time.monotonic() - t)
            time.sleep(1)
        st = hb.service_status(hb.sandbox_registry_dir(sb.name, 1)) or {}
        cp_pids = {r.role: r.pid for r in Sandbox.load(sb.name).state.processes}
        row = {
            "machines": a.machines,
            "concurrency": a.concurrency,
            "sandbox_up_s": round(up_s, 1),
            "joined": len(res) - len(failed),
            "failed": len(failed),
            "join_wall_s": round(join_wall, 1),
            "join_per_machine_median_s": round(statistics.median(r["s"] for r in res), 2),
            "join_per_machine_max_s": round(max(r["s"] for r in res), 2),
            "all_ready_s": round(all_ready, 1),
            "ready": ready,
            "heartbeat_rss_mib": pid_rss_mib(rec.pid),
            "heartbeat_beating": st.get("beating"),
            "heartbeat_connections": st.get("connections"),
            "apiserver_rss_mib": pid_rss_mib(cp_pids.get("cluster-kube-apiserver", 0))
            if "cluster-kube-apiserver" in cp_pids
            else None,
            "etcd_rss_mib": pid_rss_mib(cp_pids["cluster-etcd"])
            if "cluster-etcd" in cp_pids
            else None,
            "get_nodes_median_s": round(statistics.median(lat), 2),
            "get_nodes_max_s": round(max(lat), 2),
            "get_nodes_in_cloud_median_s": round(statistics.median(lat_cloud), 2),
            "get_nodes_in_cloud_max_s": round(max(lat_cloud), 2),
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(row), flush=True)
        rows = list(csv.DictReader(RESULTS.open())) if RESULTS.exists() else []
        rows.append({k: str(v) for k, v in row.items()})
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(RESULTS, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, restval="")
            w.writeheader()
            w.writerows(rows)
    finally:
        if not a.keep:
            down(sb.name)


if __name__ == "__main__":
    main()
