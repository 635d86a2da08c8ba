"""Benchmark (not a test): time from `kubectl apply` of a NodeTask to its Job
existing and to the Job's pod running on the proxy node, in the sandbox (root).

    .venv/bin/python bench/operator_latency.py [--tasks 5]

Brings up its own small sandbox with its cluster, applies deploy/ (CRD,
namespace, RBAC), runs `penetrator operator --kubeconfig` as a subprocess, then
creates tasks one after the other (each deleted after its pod runs). Appends rows
to bench/results/operator_latency.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from penetrator_dev.sandbox.cluster import start_cluster
from penetrator_dev.sandbox.deploy import foundation
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.state import state_dir
from penetrator_dev.sandbox.topology import SandboxSpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "operator_latency.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--name", default=f"ob{os.getpid() % 1000}")
    args = ap.parse_args()
    sb = Sandbox.up(SandboxSpec(name=args.name, machines=1, intranets=1))
    proc: subprocess.Popen[bytes] | None = None
    rows: list[dict[str, Any]] = []
    try:
        info = start_cluster(sb)

        def kubectl(*a: str, input: str | None = None) -> str:
            return str(info.kubectl(*a, input=input).stdout)

        def get(*a: str) -> Any:
            out = info.kubectl("get", *a, "-o", "json", check=False).stdout
            return json.loads(out) if out.strip() else None

        kubectl("apply", "-f", "-", input=foundation())  # CRD, namespace, RBAC
        kubectl("wait", "--for=condition=established", "--timeout=60s",
                "crd/nodetasks.nodetask.apps.superedge.io")  # fmt: skip
        kubectl("-n", "edge-system", "create", "secret", "generic", "login",
                "--from-literal=passwd=bench")  # fmt: skip
        settings = {
            "apiVersion": "penetrator.superedge.io/v1alpha1",
            "kind": "Settings",
            "apiServer": str(info.server),
            "metricsPort": 0,
            "healthEndpoint": "off",
            "reconcile": {"pollInterval": 2},
            "job": {"packages": {"amd64": "/nonexistent"}},
        }
        config = state_dir(sb.name) / "operator-settings.yaml"
        config.write_text(yaml.safe_dump(settings))
        proc = subprocess.Popen(
            [sys.executable, "-m", "penetrator.cli", "operator", "--kubeconfig",
             str(info.kubeconfig), "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        ip = sb.topology.intranet(1).machines[0].ip
        for i in range(args.tasks):
            name = f"lat-{i}"
            task = {
                "apiVersion": "nodetask.apps.superedge.io/v1beta1",
                "kind": "NodeTask",
                "metadata": {"name": name},
                "spec": {"nodeNamePrefix": "edge", "targetMachines": [ip],
                         "sshCredential": "login", "proxyNode": info.proxy_nodes[1]},
            }  # fmt: skip
            t0 = time.monotonic()
            kubectl("apply", "-f", "-", input=yaml.safe_dump(task))
            job_at = pod_at = None
            while time.monotonic() - t0 < 120 and pod_at is None:
                jobs = get(
                    "jobs", "-n", "edge-system", "-l", f"nodetask.apps.superedge.io/task={name}"
                )
                if job_at is None and jobs and jobs["items"]:
                    job_at = time.monotonic() - t0
                if job_at is not None:
                    job_name = (
                        jobs["items"][0]["metadata"]["name"] if jobs and jobs["items"] else ""
                    )
                    pods = get("pods", "-n", "edge-system", "-l", f"job-name={job_name}")
                    if pods and any(p["status"].get("phase") in ("Running", "Succeeded", "Failed")
                                    for p in pods["items"]):  # fmt: skip
                        pod_at = time.monotonic() - t0
                time.sleep(0.1)
            rows.append({"task": i, "job_seconds": round(job_at or -1, 2),
                         "pod_running_seconds": round(pod_at or -1, 2)})  # fmt: skip
            print(json.dumps(rows[-1]))
            kubectl("delete", "nt", name, "--wait=true", "--timeout=60s")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        down(sb.name)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, ["when", "task", "job_seconds", "pod_running_seconds"])
        if new:
            w.writeheader()
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for r in rows:
            w.writerow({"when": when, **r})


if __name__ == "__main__":
    main()
