"""Join edge machines of the sandbox over SSH, as the install Job does: from the
proxy node's namespace, plain asyncssh copies the join package to each
machine, unpacks it and runs ``./edgeadm join --config`` (the token travels in
a 0600 file, never in argv). The machines reach the apiserver in the cloud
through their router's NAT; the intranet's heartbeat service keeps them Ready;
`reset` and the `down` fault turn them NotReady through the real node
lifecycle controller."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from penetrator.k8s.bootstrap_token import BootstrapToken, bootstrap_token_secret
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.join.package import build_join_packages
from penetrator_dev.sandbox.lifecycle import Sandbox
from penetrator_dev.sandbox.network import exec_argv
from penetrator_dev.sandbox.topology import Fault
from support import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

# Runs inside the proxy namespace: for each machine, send the package and the
# JoinConfiguration over SSH, unpack, join. Request on stdin, report on stdout.
INSTALLER = r"""
import asyncio, json, sys
import asyncssh

req = json.load(sys.stdin)

async def one(m):
    async with asyncssh.connect(
        m["ip"], username="root", client_keys=[req["key"]], known_hosts=req["known_hosts"],
        connect_timeout=20,
    ) as c:
        arch = (await c.run("uname -m", check=True)).stdout.strip()
        pkg = req["packages"]["arm64" if arch == "aarch64" else "amd64"]
        data = open(pkg["path"], "rb").read()
        await c.run("cat > edgeadm.tar.gz", input=data, encoding=None, check=True)
        if m.get("config") is not None:
            await c.run("umask 077; cat > join.yaml", input=m["config"], check=True)
        script = (
            "rm -rf edgeadm-install && mkdir -p edgeadm-install && "
            "tar -zxf edgeadm.tar.gz -C edgeadm-install --strip-components 1 && "
            "cd edgeadm-install && chmod +x edgeadm && ./edgeadm " + m["args"]
        )
        r = await c.run(script, check=False)
        return {"ip": m["ip"], "arch": arch, "exit": r.exit_status,
                "stdout": r.stdout, "stderr": r.stderr}

async def main():
    res = await asyncio.gather(*(one(m) for m in req["machines"]))
    json.dump(res, sys.stdout)

asyncio.run(main())
"""


@dataclass
class Env:
    sb: Sandbox
    info: Any
    packages: dict[str, Any]
    names: dict[str, str]  # ip -> node name

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [str(self.info.kubectl_binary), f"--kubeconfig={self.info.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {p.stderr}")
        return p

    def token(self, ttl: dt.timedelta = dt.timedelta(hours=1)) -> BootstrapToken:
        t = BootstrapToken.generate(dt.datetime.now(dt.UTC), ttl)
        secret = bootstrap_token_secret(t, "test_join_sandbox")
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
        return t

    @property
    def server(self) -> str:
        return str(self.info.server).split("//", 1)[1]

    def config(self, token: BootstrapToken, name: str, pin: str | None = None) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "kubeadm.k8s.io/v1beta4",
                "kind": "JoinConfiguration",
                "discovery": {
                    "bootstrapToken": {
                        "apiServerEndpoint": self.server,
                        "token": token.value,
                        "caCertHashes": [pin or self.info.ca_cert_hash],
                    }
                },
                "nodeRegistration": {"name": name},
            }
        )

    def install(self, machines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        ssh = self.sb.status()["ssh"]
        req = {
            "key": ssh["private_key"],
            "known_hosts": ssh["known_hosts"]["1"],
            "packages": {a: {"path": str(p.path)} for a, p in self.packages.items()},
            "machines": machines,
        }
        p = subprocess.run(
            exec_argv(self.sb.topology.proxy_namespace(1), [sys.executable, "-c", INSTALLER]),
            input=json.dumps(req),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        return {r["ip"]: r for r in json.loads(p.stdout)}

    def ready(self, name: str) -> str | None:
        p = self.kubectl("get", "node", name, "-o", "json", check=False)
        if p.returncode != 0:
            return None
        conds = json.loads(p.stdout)["status"].get("conditions", [])
        return next((str(c["status"]) for c in conds if c["type"] == "Ready"), None)


@pytest.fixture(scope="module")
def env(sandbox_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Env:
    sb = sandbox_factory(machines=3, intranets=1)
    info = cluster_mod.start_cluster(sb)
    hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
    packages = build_join_packages(tmp_path_factory.mktemp("pkg"))
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    sb.set_arch(1, ips[2], "aarch64")
    return Env(sb, info, packages, {ip: f"sbj-edge-{i + 1}" for i, ip in enumerate(ips)})
    # the sandbox (control plane, heartbeat service, sshd) goes down with the factory


@pytest.fixture(scope="module")
def joined(env: Env) -> dict[str, Any]:
    token = env.token()
    res = env.install(
        [
            {"ip": ip, "config": env.config(token, name), "args": "join --config ../join.yaml"}
            for ip, name in env.names.items()
        ]
    )
    for r in res.values():
        assert r["exit"] == 0, r
        assert token.token_secret not in r["stdout"] + r["stderr"]
    wait_for(lambda: all(env.ready(n) == "True" for n in env.names.values()), "3 nodes Ready", 60)
    return {"token": token, "results": res}  # how long joins take: bench/join_sandbox_bench.py


def test_three_machines_join_over_ssh_and_turn_ready(env: Env, joined: dict[str, Any]) -> None:
    nodes = {
        n["metadata"]["name"]: n
        for n in json.loads(env.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }
    for i, (ip, name) in enumerate(env.names.items()):
        n = nodes[name]
        arch = "arm64" if i == 2 else "amd64"
        assert n["metadata"]["labels"]["kubernetes.io/arch"] == arch
        assert {"type": "InternalIP", "address": ip} in n["status"]["addresses"]
        assert joined["results"][ip]["arch"] == ("aarch64" if i == 2 else "x86_64")


def test_each_node_has_its_csr_issued_certificate(env: Env, joined: dict[str, Any]) -> None:
    csrs = json.loads(env.kubectl("get", "csr", "-o", "json").stdout)["items"]
    by_node = {c["metadata"].get("labels", {}).get("penetrator.sandbox/node"): c for c in csrs}
    for ip, name in env.names.items():
        csr = by_node[name]
        conds = {c["type"]: c["status"] for c in csr["status"]["conditions"]}
        assert conds["Approved"] == "True"
        assert csr["spec"]["username"] == f"system:bootstrap:{joined['token'].token_id}"
        crt = env.sb.machine_dir(1, ip) / "kubelet" / "pki" / "kubelet-client.crt"
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            f"system:node:{name}"
        )
        assert crt.stat().st_mode & 0o777 == 0o600


def test_wrong_pin_and_expired_token_are_refused(env: Env, joined: dict[str, Any]) -> None:
    ip = next(iter(env.names))
    good = env.token()
    expired = env.token(dt.timedelta(minutes=-5))
    wrong = "sha256:" + "cd" * 32
    res = env.install(
        [
            {"ip": ip, "config": env.config(good, "sbj-wrong", wrong),
             "args": "join --config ../join.yaml"},
        ]
    )[ip]  # fmt: skip
    assert res["exit"] == 3, res
    assert f"the CA pin does not match: expected {wrong}" in res["stderr"]
    res = env.install(
        [
            {"ip": ip, "config": None,
             "args": f"join {env.server} --token {expired.value} "
                     f"--discovery-token-ca-cert-hash {env.info.ca_cert_hash} "
                     "--node-name sbj-expired"},
        ]
    )[ip]  # fmt: skip
    assert res["exit"] == 3, res
    assert "is unknown to this cluster or has expired" in res["stderr"]
    assert env.ready("sbj-wrong") is None
    assert env.ready("sbj-expired") is None
    assert env.ready(env.names[ip]) == "True"  # the machine's own node is untouched


def test_down_fault_stops_heartbeats(env: Env, joined: dict[str, Any]) -> None:
    ip, name = list(env.names.items())[1]
    env.sb.fault(1, ip, Fault.DOWN)
    try:
        wait_for(lambda: env.ready(name) not in ("True", None), f"{name} NotReady", 60)
    finally:
        env.sb.fault(1, ip, None)
    wait_for(lambda: env.ready(name) == "True", f"{name} Ready again", 30)


def test_reset_over_ssh_turns_the_node_not_ready(env: Env, joined: dict[str, Any]) -> None:
    ip, name = list(env.names.items())[2]
    res = env.install([{"ip": ip, "config": None, "args": "reset --force"}])[ip]
    assert res["exit"] == 0, res
    assert not (env.sb.machine_dir(1, ip) / "kubelet").exists()
    wait_for(lambda: env.ready(name) not in ("True", None), f"{name} NotReady", 60)
    assert env.ready(next(iter(env.names.values()))) == "True"
    st = hb.service_status(hb.sandbox_registry_dir(env.sb.name, 1))
    assert st is not None
    assert st["machines"] == 2
