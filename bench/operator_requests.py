"""Benchmark (not a test): API requests and wall time per reconcile of one task,
with 10 and with 5,000 Nodes in the cluster. The count must not grow with the
cluster: the operator lists only the Nodes carrying the task's label.

    .venv/bin/python bench/operator_requests.py [--nodes 10,5000] [--machines 20]

Starts its own control plane (penetrator-dev testenv), applies deploy/crd.yaml and
namespace, creates the Nodes (no kubelets: plain objects) and a task, then runs
``Runtime.step`` in-process (no Kopf) and reads ``Runtime.requests`` (every API
request the client sends, counted by an httpx event hook; Kopf's watch streams are
not per reconcile). Step 0 writes the task's plan (one Node lookup per generated
name, then one patch), step 1 starts round 1 (results, token record and cluster-info, the
task's Secret and host-key pins, ConfigMaps, the Job's Role and RoleBinding, Job,
Event, status: 19 requests), later steps only observe: list the labelled
Nodes, get the Job, get the results ConfigMap. Appends rows to
bench/results/operator_requests.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from penetrator.api.settings import load_settings
from penetrator.k8s.client import NodeTaskResource, make_client
from penetrator.operator.metrics import Metrics
from penetrator.operator.runtime import Runtime
from penetrator_dev.sandbox.deploy import foundation
from penetrator_dev.testenv.controlplane import ControlPlane, ControlPlaneOptions

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "operator_requests.csv"


def nodes_manifest(start: int, count: int) -> str:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"bench-node-{i:05d}", "labels": {"bench": "yes"}},
        }
        for i in range(start, start + count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


async def measure(cp: ControlPlane, machines: int, steps: int) -> list[dict[str, Any]]:
    client = make_client(cp.kubeconfig, field_manager="penetrator-bench")
    settings = load_settings(
        {
            "identity": "bench",
            "job": {"packages": {"amd64": "/p.tgz"}},
            "metricsPort": 0,
            "reconcile": {"pollInterval": 1},
        }
    )
    runtime = Runtime(client, settings, Metrics())
    name = f"bench-{int(time.time())}"
    task = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": name},
        "spec": {
            "nodeNamePrefix": "edge",
            "targetMachines": [f"10.9.{i // 256}.{i % 256}" for i in range(machines)],
            "sshCredential": "login",
            "proxyNode": "proxy-1",
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(task))
    rows = []
    for step in range(steps):
        body = (await client.get(NodeTaskResource, name)).to_dict()
        before = runtime.requests
        t0 = time.perf_counter()
        await runtime.step(body, {})
        rows.append(
            {
                "step": step,
                "requests": runtime.requests - before,
                "seconds": round(time.perf_counter() - t0, 4),
            }
        )
    cp.kubectl("delete", "nt", name, "--wait=false")
    await client.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="10,5000")
    ap.add_argument("--machines", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    with ControlPlane(ControlPlaneOptions(die_with_parent=True)) as cp:
        cp.kubectl("apply", "-f", "-", input=foundation(("CustomResourceDefinition", "Namespace")))
        cp.kubectl(
            "wait", "--for=condition=established", "--timeout=60s",
            "crd/nodetasks.nodetask.apps.superedge.io",
        )  # fmt: skip
        cp.kubectl(
            "-n", "edge-system", "create", "secret", "generic", "login",
            "--from-literal=passwd=bench",
        )  # fmt: skip
        have = 0
        out: list[dict[str, Any]] = []
        for n in sorted(int(x) for x in args.nodes.split(",")):
            while have < n:
                chunk = min(500, n - have)
                cp.kubectl("create", "-f", "-", input=nodes_manifest(have, chunk))
                have += chunk
            rows = asyncio.run(measure(cp, args.machines, args.steps))
            for r in rows:
                out.append({"nodes": n, "machines": args.machines, **r})
                print(json.dumps(out[-1]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, ["when", "nodes", "machines", "step", "requests", "seconds"])
        if new:
            w.writeheader()
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for r in out:
            w.writerow({"when": when, **r})


if __name__ == "__main__":
    main()
