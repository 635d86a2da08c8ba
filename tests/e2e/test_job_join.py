"""Acceptance: `penetrator job` in the proxy node's namespace joins sandbox
machines behind NAT to the sandbox's real cluster (the real join program, the
default edgeadm template), half by password and half by key; every machine
becomes a Ready Node; once labelled (the operator's part: the Job never writes
Nodes, so the test labels them as the operator would) a second run touches nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator.api import NODE_LABEL
from penetrator.k8s.bootstrap_token import BootstrapToken, bootstrap_token_secret
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import build_join_packages
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.network import exec_argv
from support import REPO

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

PER_AUTH = int(os.environ.get("PENETRATOR_JOB_E2E_MACHINES", "5"))  # the issue: 20
LABEL = "accept-x1y2z3"


@pytest.fixture(scope="module")
def env(sandbox_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    sb = sandbox_factory(machines=2 * PER_AUTH, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        packages = build_join_packages(tmp_path_factory.mktemp("pkg"))
        yield sb, info, {a: str(p.path) for a, p in packages.items()}
    finally:
        down(sb.name)


def kubectl(info: Any, *args: str, input: str | None = None) -> str:
    p = subprocess.run(
        [str(info.kubectl_binary), f"--kubeconfig={info.kubeconfig}", *args],
        input=input, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout


def run(sb: Sandbox, info: Any, tmp: Path, ips: list[str], pkgs: dict[str, str], token: str,
        key: bool) -> tuple[int, dict[str, Any]]:  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    creds = tmp / "creds"
    creds.mkdir()
    ssh = sb.status()["ssh"]
    shutil.copy(ssh["private_key"] if key else ssh["password_file"],
                creds / ("sshkey" if key else "passwd"))  # fmt: skip
    (creds / "token").write_text(token)
    cfg = {
        "machines": [{"name": f"acc-{ip.replace('.', '-')}", "ip": ip} for ip in ips],
        "taskLabel": LABEL,
        "apiServer": str(info.server).split("//", 1)[1],
        "caCertHash": info.ca_cert_hash,
        "packages": pkgs,
        "workDir": "penetrator",
        "timeouts": {"wait_ready": 90},
    }
    (tmp / "job.yaml").write_text(yaml.safe_dump(cfg))
    argv = exec_argv(
        sb.topology.proxy_namespace(1),
        [sys.executable, "-m", "penetrator.cli", "job", "--config", str(tmp / "job.yaml"),
         "--credentials", str(creds), "--kubeconfig", str(info.in_cloud_kubeconfig),
         "--known-hosts-out", str(tmp.parent / "pins")],
    )  # fmt: skip
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)
    assert token not in cp.stdout + cp.stderr
    lines = [json.loads(x) for x in cp.stdout.splitlines() if x.startswith('{"arch"')]
    return cp.returncode, {r["ip"]: r for r in lines}


def stamp(sb: Sandbox, ip: str) -> list[tuple[str, int]]:
    d = sb.machine_dir(1, ip)
    files = [*(d / "home" / "penetrator" / "packages").iterdir()]
    files += [p for p in (d / "kubelet").rglob("*") if p.is_file()]
    return sorted((str(p), p.stat().st_mtime_ns) for p in files)


def test_machines_join_by_password_and_by_key_then_a_second_run_does_nothing(
    env: Any, tmp_path: Path
) -> None:
    sb, info, pkgs = env
    t = BootstrapToken.generate(dt.datetime.now(dt.UTC), dt.timedelta(hours=1))
    kubectl(info, "apply", "-f", "-", input=yaml.safe_dump(bootstrap_token_secret(t, "job e2e")))
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    sb.set_arch(1, ips[-1], "aarch64")
    rc1, r1 = run(sb, info, tmp_path / "pw", ips[:PER_AUTH], pkgs, t.value, key=False)
    rc2, r2 = run(sb, info, tmp_path / "key", ips[PER_AUTH:], pkgs, t.value, key=True)
    assert rc1 == 0, r1
    assert rc2 == 0, r2
    results = {**r1, **r2}
    nodes = {
        n["metadata"]["name"]: n
        for n in json.loads(kubectl(info, "get", "nodes", "-o", "json"))["items"]
    }
    for ip in ips:
        r = results[ip]
        assert r["phase"] == "joined", r
        assert r["transferred"] is True
        n = nodes[r["name"]]
        assert NODE_LABEL not in n["metadata"]["labels"]  # the operator labels, not the Job
        assert {"type": "InternalIP", "address": ip} in n["status"]["addresses"]
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True"
        arch = "arm64" if ip == ips[-1] else "amd64"
        assert n["metadata"]["labels"]["kubernetes.io/arch"] == arch
    for ip in ips:  # what the operator does once the results say joined
        kubectl(info, "label", "node", results[ip]["name"], f"{NODE_LABEL}={LABEL}")
    before = {ip: stamp(sb, ip) for ip in ips}
    rc3, r3 = run(sb, info, tmp_path / "again", ips, pkgs, t.value, key=True)
    assert rc3 == 0
    for ip in ips:
        assert r3[ip]["skipped"] is True
        assert "connect" not in r3[ip]["durations"]  # not even an SSH connection
        assert stamp(sb, ip) == before[ip]
