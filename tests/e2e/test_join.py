"""The sandbox's edgeadm against the real control plane (loopback): token
discovery with the CA pin, TLS bootstrap through CSRs the real controller
manager approves and signs, Nodes + Leases, the heartbeat service keeping them
Ready, and `reset` / the `down` fault turning them NotReady through the real
node lifecycle controller.

The machines here are local processes with a sandbox-shaped state directory
(``<state>/machines/1/<ip>``); test_join_sandbox.py does the same over SSH in
the sandbox."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import build_join_package
from penetrator_dev.testenv.bootstrap import create_bootstrap_token
from penetrator_dev.testenv.controlplane import ControlPlane
from support import wait_for

pytestmark = pytest.mark.cluster

IPS = ["10.10.1.1", "10.10.1.2", "10.10.1.3"]


@dataclass
class Site:
    state: Path  # a sandbox-shaped state directory
    edgeadm: Path
    server: str  # host:port
    names: list[str]

    def machine_dir(self, ip: str) -> Path:
        return self.state / "machines" / "1" / ip

    def registry(self) -> Path:
        return self.state / "heartbeat" / "1"

    def run(self, ip: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        d = self.machine_dir(ip)
        env = {
            **os.environ,
            "EDGE_MACHINE_DIR": str(d),
            "EDGE_MACHINE_IP": ip,
            "PATH": f"{d / 'bin'}:{os.environ['PATH']}",
        }
        env.pop("EDGE_HEARTBEAT_DIR", None)
        return subprocess.run(
            [str(self.edgeadm), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=d,
            check=False,
        )


def _kjson(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _ready(cluster: ControlPlane, name: str) -> str | None:
    p = cluster.kubectl("get", "node", name, "-o", "json", check=False)
    if p.returncode != 0:
        return None
    for c in json.loads(p.stdout)["status"].get("conditions", []):
        if c["type"] == "Ready":
            return str(c["status"])
    return None


@pytest.fixture(scope="module")
def site(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("join")
    state = root / "sandbox-tj"
    for ip in IPS:
        (state / "machines" / "1" / ip / "home").mkdir(parents=True)
    # the third machine answers aarch64, as the sandbox's uname shim does
    shim = state / "machines" / "1" / IPS[2] / "bin" / "uname"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\n[ "$1" = -m ] && echo aarch64 || /bin/uname "$@"\n')
    shim.chmod(0o755)
    pkg = build_join_package(root / "pkg", "amd64")
    with tarfile.open(pkg.path) as t:
        t.extractall(root / "unpacked", filter="data")
    edgeadm = root / "unpacked" / pkg.top_dir / "edgeadm"
    s = Site(state, edgeadm, cluster.server.split("//", 1)[1], [])
    hb.start_service(s.registry(), sandbox_state=state, lease_interval=2, status_interval=30)
    try:
        yield s
    finally:
        hb.stop_service(s.registry())
        for ip in IPS:
            s.run(ip, "reset", "--force")
        if s.names:
            cluster.kubectl("delete", "node", "--ignore-not-found", "--wait=false", *s.names)
            cluster.kubectl(
                "delete", "lease", "-n", "kube-node-lease", "--ignore-not-found", *s.names
            )
        cluster.kubectl(
            "delete", "csr", "-l", "penetrator.sandbox/node", "--ignore-not-found", check=False
        )


@pytest.fixture(scope="module")
def joined(cluster: ControlPlane, site: Site) -> dict[str, Any]:
    """Join the three machines: two with flags, one with --config."""
    token = create_bootstrap_token(cluster)
    out: dict[str, Any] = {"token": token}
    for i, ip in enumerate(IPS):
        name = f"tj-edge-{i + 1}"
        site.names.append(name)
        if i == 1:
            cfg = site.machine_dir(ip) / "home" / "join.yaml"
            cfg.write_text(
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n"
                "discovery:\n  bootstrapToken:\n"
                f"    apiServerEndpoint: {site.server}\n"
                f"    token: {token.value}\n"
                f"    caCertHashes: [{cluster.ca_cert_hash}]\n"
                f"nodeRegistration:\n  name: {name}\n"
            )
            cfg.chmod(0o600)
            p = site.run(ip, "join", "--config", str(cfg))
        else:
            p = site.run(
                ip,
                "join",
                site.server,
                "--token",
                token.value,
                "--discovery-token-ca-cert-hash",
                cluster.ca_cert_hash,
                "--node-name",
                name,
            )
        assert p.returncode == 0, p.stderr + p.stdout
        assert token.token_secret not in p.stdout + p.stderr
        assert "This node has joined the cluster" in p.stdout
        wait_for(lambda n=name: _ready(cluster, n) == "True", f"{name} Ready", 60)
    return out


def test_three_machines_join_and_turn_ready(
    cluster: ControlPlane, site: Site, joined: dict[str, Any]
) -> None:
    nodes = {n["metadata"]["name"]: n for n in _kjson(cluster, "get", "nodes")["items"]}
    for name, ip, arch in zip(site.names, IPS, ["amd64", "amd64", "arm64"], strict=True):
        n = nodes[name]
        labels = n["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == name
        assert labels["kubernetes.io/arch"] == arch
        assert labels["kubernetes.io/os"] == "linux"
        assert {"type": "InternalIP", "address": ip} in n["status"]["addresses"]
        assert n["status"]["nodeInfo"]["architecture"] == arch
        lease = _kjson(cluster, "get", "lease", "-n", "kube-node-lease", name)
        assert lease["spec"]["holderIdentity"] == name
        assert lease["metadata"]["ownerReferences"][0]["uid"] == n["metadata"]["uid"]


def test_each_node_holds_a_csr_issued_client_certificate(
    cluster: ControlPlane, site: Site, joined: dict[str, Any]
) -> None:
    token = joined["token"]
    csrs = _kjson(cluster, "get", "csr", "-l", "penetrator.sandbox/node")["items"]
    by_node = {c["metadata"]["labels"]["penetrator.sandbox/node"]: c for c in csrs}
    for name, ip in zip(site.names, IPS, strict=True):
        csr = by_node[name]
        conds = {c["type"]: c["status"] for c in csr["status"]["conditions"]}
        assert conds.get("Approved") == "True", csr["status"]
        assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        assert csr["spec"]["username"] == f"system:bootstrap:{token.token_id}"
        issued = base64.b64decode(csr["status"]["certificate"])
        pki = site.machine_dir(ip) / "kubelet" / "pki"
        kept = (pki / "kubelet-client.crt").read_bytes()
        assert kept == issued
        cert = x509.load_pem_x509_certificate(kept)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        assert (cn, org) == (f"system:node:{name}", "system:nodes")
        ca = x509.load_pem_x509_certificate(cluster.pki.ca_crt.read_bytes())
        assert cert.issuer == ca.subject
        for f in ("kubelet-client.crt", "kubelet-client.key"):
            assert (pki / f).stat().st_mode & 0o777 == 0o600
        # the node's own identity is what the apiserver sees: it may read its Node
        # but the Node authorizer refuses another node's Lease
        kc = site.machine_dir(ip) / "kubelet" / "kubelet.conf"
        me = cluster.kubectl("--kubeconfig", str(kc), "auth", "whoami", "-o", "json")
        assert json.loads(me.stdout)["status"]["userInfo"]["username"] == f"system:node:{name}"
        other = site.names[(site.names.index(name) + 1) % 3]
        p = cluster.kubectl(
            "--kubeconfig", str(kc), "-n", "kube-node-lease", "delete", "lease", other, check=False
        )
        assert p.returncode != 0
        assert "forbidden" in p.stderr.lower()


def test_the_heartbeat_service_renews_every_lease(
    cluster: ControlPlane, site: Site, joined: dict[str, Any]
) -> None:
    def renew_times() -> dict[str, str]:
        return {
            n: _kjson(cluster, "get", "lease", "-n", "kube-node-lease", n)["spec"]["renewTime"]
            for n in site.names
        }

    before = renew_times()
    wait_for(
        lambda: all(after != before[n] for n, after in renew_times().items()),
        "every lease to be renewed",
        20,
    )
    st = hb.service_status(site.registry())
    assert st is not None
    wait_for(
        lambda: (hb.service_status(site.registry()) or {}).get("beating") == 3,
        "the service to report 3 machines beating",
        15,
    )


def test_wrong_ca_pin_is_refused(cluster: ControlPlane, site: Site) -> None:
    token = create_bootstrap_token(cluster)
    wrong = "sha256:" + "ab" * 32
    p = site.run(
        IPS[0], "join", site.server, "--token", token.value,
        "--discovery-token-ca-cert-hash", wrong, "--node-name", "tj-wrong-pin",
    )  # fmt: skip
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"the CA pin does not match: expected {wrong}, got {cluster.ca_cert_hash}" in p.stderr
    assert token.token_secret not in p.stdout + p.stderr
    assert _ready(cluster, "tj-wrong-pin") is None


def test_expired_token_is_refused(cluster: ControlPlane, site: Site) -> None:
    token = create_bootstrap_token(cluster, dt.timedelta(minutes=-5))
    p = site.run(
        IPS[0], "join", site.server, "--token", token.value,
        "--discovery-token-ca-cert-hash", cluster.ca_cert_hash, "--node-name", "tj-expired",
    )  # fmt: skip
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"bootstrap token '{token.token_id}' is unknown to this cluster or has expired" in (
        p.stderr
    )
    assert token.token_secret not in p.stdout + p.stderr
    assert _ready(cluster, "tj-expired") is None


def test_install_fails_fault_fails_the_join(cluster: ControlPlane, site: Site) -> None:
    token = create_bootstrap_token(cluster)
    marker = site.machine_dir(IPS[0]) / "install-fails"
    marker.write_text("fault\n")
    try:
        p = site.run(
            IPS[0], "join", site.server, "--token", token.value,
            "--discovery-token-ca-cert-hash", cluster.ca_cert_hash, "--node-name", "tj-fails",
        )  # fmt: skip
    finally:
        marker.unlink()
    assert p.returncode == 7
    assert "install-fails" in p.stderr
    assert _ready(cluster, "tj-fails") is None


def test_down_fault_turns_the_node_not_ready_and_back(
    cluster: ControlPlane, site: Site, joined: dict[str, Any]
) -> None:
    name, ip = site.names[1], IPS[1]
    state_file = site.state / "state.json"
    state_file.write_text(json.dumps({"faults": {f"1/{ip}": "down"}}))
    try:
        wait_for(lambda: _ready(cluster, name) not in ("True", None), f"{name} NotReady", 90)
        assert _ready(cluster, site.names[0]) == "True"
    finally:
        state_file.write_text(json.dumps({"faults": {}}))
    wait_for(lambda: _ready(cluster, name) == "True", f"{name} Ready again", 30)


def test_reset_turns_the_node_not_ready_and_clears_the_machine(
    cluster: ControlPlane, site: Site, joined: dict[str, Any]
) -> None:
    name, ip = site.names[2], IPS[2]
    p = site.run(ip, "reset", "--force")
    assert p.returncode == 0, p.stderr
    assert not (site.machine_dir(ip) / "kubelet").exists()
    wait_for(lambda: _ready(cluster, name) not in ("True", None), f"{name} NotReady", 60)
    assert _ready(cluster, site.names[0]) == "True"
    again = site.run(ip, "reset", "--force")  # idempotent
    assert again.returncode == 0
    assert "nothing to clean" in again.stdout
