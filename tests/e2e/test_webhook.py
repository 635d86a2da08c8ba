"""The admission webhook through the real apiserver: the operator deployed from
deploy/penetrator.yaml (with its webhook configurations and RBAC) into a sandbox of its own; the
apiserver calls the webhook through the Service (aggregator routing: the endpoint is
the operator pod's IP). Also the user CLI against the same sandbox
(machines really joined through the proxy node, exit codes, the kubectl plugin)."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from penetrator.api import CONFIGMAP_NAME_ANNOTATION, JOB_NAME_ANNOTATION, NODE_LABEL
from penetrator.api.models import is_generated_name
from penetrator.k8s.webhook_tls import (
    RENEW_BEFORE,
    SERVING_VALIDITY,
    ServingCert,
    service_hosts,
    sign_serving,
    usable,
)
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import deploy_penetrator
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from support import REPO, add_task, venv_bin, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
UNREACHABLE = ["10.254.0.1", "10.254.0.2"]  # no such machines: a task on them stays creating


class Deployed:
    def __init__(self, sb: Sandbox, info: Any, password_file: str) -> None:
        self.sb = sb
        self.info = info
        self.password_file = password_file
        self.proxy = info.proxy_nodes[1]
        self.ips = [m.ip for m in sb.topology.intranet(1).machines]
        self.private_key = ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.info.kubectl(*args, input=input, check=check)

    def get(self, *args: str) -> Any:
        out = self.kubectl("get", *args, "-o", "json", check=False).stdout
        return json.loads(out) if out.strip() else None

    def create(self, body: dict[str, Any]) -> Any:
        """kubectl create -f -: the CompletedProcess (check=False)."""
        return self.kubectl("create", "-f", "-", input=yaml.safe_dump(body), check=False)

    def delete_task(self, name: str) -> None:
        self.kubectl("delete", "nt", name, "--ignore-not-found", "--wait=true", check=False)

    def operator_log(self) -> str:
        pods = self.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")
        for p in (pods or {}).get("items", []):
            log = self.info.pod_log(p["metadata"]["name"], NS)
            if log and log.exists():
                return str(log.read_text()[-20000:])
        return "no operator log"


def webhook_ready(d: Deployed) -> bool:
    """A server-side dry-run create of a good task passes the webhook (until it serves,
    the apiserver fails the call: failurePolicy Fail)."""
    body = add_task("probe", ["10.254.9.9"], prefix="p")
    p = d.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(body),
        check=False,
    )  # fmt: skip
    return p.returncode == 0 and "nodeNamesOverride" in p.stdout


@pytest.fixture(scope="module")
def deployed(sandbox_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    sb = sandbox_factory(machines=4, intranets=1)
    try:
        info = cluster_mod.start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        deploy_penetrator(
            sb.name,
            info,
            {
                "reconcile": {
                    "pollInterval": 2,
                    "maxAttempts": 1,  # an unreachable machine fails in one round
                },
                "webhook": {
                    "renewCheckSeconds": 3,
                    "nodeCheckSeconds": 2,  # 5,000 names: by label past 2 s
                },
                "job": {"timeouts": {"waitReady": 120, "connect": 5}},
            },
        )
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        d = Deployed(sb, info, ssh["password_file"])
        d.private_key = ssh["private_key"]
        try:
            wait_for(lambda: webhook_ready(d), "the webhook to answer", 120)
        except AssertionError:
            print(d.operator_log())
            raise
        yield d
    finally:
        down(sb.name)


def test_certificate_is_generated_and_ca_bundle_set(deployed: Deployed) -> None:
    d = deployed
    secret = d.get("secret", "-n", NS, "penetrator-webhook-tls")
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        config = d.get(kind, "penetrator.nodetask.apps.superedge.io")
        for w in config["webhooks"]:
            assert w["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    # no key in the repository: the manifest's configurations carry none
    shipped = [
        w["clientConfig"]
        for doc in yaml.safe_load_all((REPO / "deploy" / "penetrator.yaml").read_text())
        if doc and doc["kind"].endswith("WebhookConfiguration")
        for w in doc["webhooks"]
    ]
    assert len(shipped) == 3
    assert all("caBundle" not in c for c in shipped)


def test_add_task_gets_generated_unique_names_and_label(deployed: Deployed) -> None:
    d = deployed
    ips = [*UNREACHABLE, UNREACHABLE[0]]
    try:
        p = d.create(add_task("gen", ips, d.proxy))
        assert p.returncode == 0, p.stderr
        t = d.get("nt", "gen")
        spec, meta = t["spec"], t["metadata"]
        assert spec["targetMachines"] == UNREACHABLE
        names = spec["nodeNamesOverride"]
        assert sorted(names.values()) == sorted(UNREACHABLE)
        assert len(set(names)) == 2
        assert all(is_generated_name("edge", n) for n in names)
        assert spec["nodeNamesGenerated"] is True
        assert meta["labels"][NODE_LABEL].startswith("gen-")
        # the objects' names come from the uid (given after the mutating webhook): the
        # operator writes the annotations that show them, and its Job has that name
        ours = f"nodetask-{meta['uid']}"

        def annotated() -> bool:
            notes = d.get("nt", "gen")["metadata"].get("annotations") or {}
            return notes.get(JOB_NAME_ANNOTATION) == notes.get(CONFIGMAP_NAME_ANNOTATION) == ours

        wait_for(annotated, "the operator's annotations", 60)
        job = wait_for(lambda: d.get("job", "-n", NS, ours), "the task's Job", 60)
        assert job["metadata"]["ownerReferences"][0]["name"] == "gen"
        # spec changes are refused (webhook or CRD rule), metadata set once is kept
        p = d.kubectl(
            "patch", "nt", "gen", "--type=merge", "-p", '{"spec":{"sshPort":2222}}', check=False
        )
        assert p.returncode != 0
        assert "immutable" in p.stderr
        p = d.kubectl("label", "nt", "gen", "--overwrite", f"{NODE_LABEL}=other", check=False)
        assert p.returncode != 0
        assert f"metadata.labels[{NODE_LABEL}]: is set once" in p.stderr
    finally:
        d.delete_task("gen")


REJECTIONS = [
    # (name, spec, expected text in the message)
    (
        "no-secret",
        {"sshCredential": "nope"},
        "spec.sshCredential: Secret edge-system/nope does not exist",
    ),
    ("empty-secret", {"sshCredential": "empty"}, "has neither key passwd"),
    ("both-secret", {"sshCredential": "both"}, "has both keys passwd and sshkey"),
    ("no-proxy", {"proxyNode": "no-such-node"}, "spec.proxyNode: there is no Node 'no-such-node'"),
    (
        "two-names",
        {"nodeNamesOverride": {"a": "10.254.1.1", "b": "10.254.1.1"}, "targetMachines": None},
        "10.254.1.1 is given to both 'a' and 'b'",
    ),
    (
        "two-spellings",  # one machine in two spellings: the schema cannot see it
        {"nodeNamesOverride": {"a": "fd00::1", "b": "fd00:0::1"}, "targetMachines": None},
        "fd00:0::1 is given to both 'a' and 'b'",
    ),
    (
        "dup-v6-targets",  # duplicates in two spellings are removed, not refused
        {"targetMachines": ["fd00::7", "FD00:0::7"], "sshCredential": "nope"},
        "spec.sshCredential: Secret edge-system/nope does not exist",
    ),
    (
        "both-lists",
        {"nodeNamesOverride": {"a": "10.254.1.1"}},
        "give only one of spec.targetMachines",
    ),
    (
        "mark",
        {"nodeNamesOverride": {"edge-abcdef": "10.254.1.1"}, "nodeNamesGenerated": True},
        "nodeNamesGenerated is set by the admission webhook only",
    ),
]


@pytest.mark.parametrize(("name", "spec", "text"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejections_name_the_field_and_fix(
    deployed: Deployed, name: str, spec: dict[str, Any], text: str
) -> None:
    d = deployed
    d.kubectl("-n", NS, "create", "secret", "generic", "empty", "--from-literal=x=y", check=False)
    d.kubectl(
        "-n", NS, "create", "secret", "generic", "both",
        "--from-literal=passwd=y", "--from-literal=sshkey=z", check=False,
    )  # fmt: skip
    body = add_task(name, ["10.254.1.1"], d.proxy)
    body["spec"].update(spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    p = d.create(body)
    try:
        assert p.returncode != 0, f"{name} was accepted"
        assert "denied the request" in p.stderr
        assert text in p.stderr, p.stderr
    finally:
        d.delete_task(name)


def test_two_tasks_sharing_a_machine(deployed: Deployed) -> None:
    d = deployed
    d.kubectl("cordon", d.proxy)  # the first task's Job never runs: it stays creating
    try:
        first = add_task("first", UNREACHABLE, d.proxy, prefix="a")
        assert d.create(first).returncode == 0
        second = add_task("second", ["10.254.0.9", UNREACHABLE[1]], d.proxy, prefix="b")
        p = d.create(second)
        assert p.returncode != 0
        assert f"machine {UNREACHABLE[1]} is being installed by NodeTask 'first'" in p.stderr
        assert "spec.targetMachines" in p.stderr
        # a task on other machines is accepted meanwhile
        third = add_task("third", ["10.254.0.9"], d.proxy, prefix="c")
        assert d.create(third).returncode == 0
    finally:
        for n in ("first", "second", "third"):
            d.delete_task(n)
        d.kubectl("uncordon", d.proxy)


# --- the user CLI against the same sandbox --------------------------------------------


def cli(d: Deployed, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`penetrator ARGS --kubeconfig ...` with stdout a pipe (plain lines)."""
    return subprocess.run(
        [str(venv_bin() / "penetrator"), *args, "--kubeconfig", str(d.info.kubeconfig)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) <= 1, p.stderr


def test_cli_credential_create(deployed: Deployed, tmp_path: Path) -> None:
    d = deployed
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    p = cli(d, "credential", "create", "cli-pw", "--password-file", str(pw))
    assert p.returncode == 0, p.stderr
    data = d.get("secret", "-n", NS, "cli-pw")["data"]
    assert base64.b64decode(data["passwd"]) == b"s3cret"
    p = cli(d, "credential", "create", "cli-pw", "--password-file", str(pw))
    assert p.returncode == 1
    assert "already exists" in p.stderr
    no_traceback(p)
    key = tmp_path / "key"
    key.write_bytes(Path(d.private_key).read_bytes())
    key.chmod(0o644)
    p = cli(d, "credential", "create", "cli-key", "--key-file", str(key))
    assert p.returncode == 2
    assert "readable by others" in p.stderr
    assert d.get("secret", "-n", NS, "cli-key") is None
    key.chmod(0o600)
    p = cli(d, "credential", "create", "cli-key", "--key-file", str(key))
    assert p.returncode == 0, p.stderr
    assert set(d.get("secret", "-n", NS, "cli-key")["data"]) == {"sshkey"}
    p = cli(d, "credential", "create", "x", "--key-file", str(key), "--password-file", str(pw))
    assert p.returncode == 2


def test_cli_add_reinstall_status_watch(deployed: Deployed) -> None:
    d = deployed
    cred = "cli-key" if d.get("secret", "-n", NS, "cli-key") else "login"
    a, b = d.ips[0], d.ips[1]
    try:
        p = cli(d, "add", a, b, b, "--prefix", "cli", "--proxy-node", d.proxy,
                "--credential", cred, "--name", "cli-add")  # fmt: skip
        print(p.stdout, p.stderr)
        assert p.returncode == 0, p.stderr
        assert "nodetask/cli-add created (2 machines planned)" in p.stdout
        last = p.stdout.strip().splitlines()[-1]
        assert "nodetask/cli-add ready: 2/2 joined, 0 failed" in last
        t = d.get("nt", "cli-add")
        label = t["metadata"]["labels"][NODE_LABEL]
        nodes = d.get("nodes", "-l", f"{NODE_LABEL}={label}")["items"]
        assert len(nodes) == 2

        p = cli(d, "status", "cli-add")
        assert p.returncode == 0
        assert "ready: 2/2 joined" in p.stdout
        p = cli(d, "status", "cli-add", "-o", "json")
        assert json.loads(p.stdout)["status"]["nodetaskStatus"] == "ready"
        p = cli(d, "watch", "cli-add")
        assert p.returncode == 0
        assert "ready" in p.stdout

        # the same machine again while cli-add is ready: allowed; rename on reinstall
        old_name = next(n for n, ip in t["spec"]["nodeNamesOverride"].items() if ip == a)
        p = cli(d, "reinstall", f"cli-renamed={a}", "--proxy-node", d.proxy,
                "--credential", cred, "--name", "cli-re")  # fmt: skip
        print(p.stdout, p.stderr)
        assert p.returncode == 0, p.stderr
        assert "nodetask/cli-re ready: 1/1 joined" in p.stdout
        assert d.get("node", "cli-renamed") is not None
        assert d.get("node", old_name) is None
    finally:
        d.delete_task("cli-add")
        d.delete_task("cli-re")


def test_cli_refusals_and_failed_task(deployed: Deployed) -> None:
    d = deployed
    try:
        p = cli(d, "status", "no-such-task")
        assert p.returncode == 1
        assert "not found" in p.stderr
        no_traceback(p)
        # the webhook's refusal, one line
        p = cli(d, "add", "10.254.3.1", "--prefix", "x", "--proxy-node", "nope",
                "--credential", "login", "--no-wait")  # fmt: skip
        assert p.returncode == 1
        assert "spec.proxyNode: there is no Node 'nope'" in p.stderr
        no_traceback(p)
        # server dry run shows the generated names, stores nothing
        p = cli(d, "add", "10.254.3.1", "--prefix", "dry", "--proxy-node", d.proxy,
                "--credential", "login", "--dry-run=server", "-o", "json")  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert len(json.loads(p.stdout)["spec"]["nodeNamesOverride"]) == 1
        # a machine that cannot be reached: the task fails, watch says why, exit 1
        p = cli(d, "add", "10.254.3.2", "--prefix", "bad", "--proxy-node", d.proxy,
                "--credential", "login", "--name", "cli-bad")  # fmt: skip
        print(p.stdout, p.stderr)
        assert p.returncode == 1
        assert "nodetask/cli-bad failed: 0/1 joined, 1 failed" in p.stdout
        assert "failed bad-" in p.stdout
        assert "(10.254.3.2) after 1 attempt(s): " in p.stdout
        p = cli(d, "status", "cli-bad")
        assert p.returncode == 1
    finally:
        d.delete_task("cli-bad")


def test_kubectl_plugin_list_finds_penetrator(deployed: Deployed) -> None:
    d = deployed
    env = {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}"}
    kubectl = str(d.info.kubectl_binary)
    p = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env,
                       check=False, timeout=60)  # fmt: skip
    assert str(venv_bin() / "kubectl-penetrator") in p.stdout, p.stdout + p.stderr
    p = subprocess.run(
        [kubectl, "penetrator", "status", "no-such-task", "--kubeconfig", str(d.info.kubeconfig)],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1
    assert "NodeTask no-such-task" in p.stderr


def test_two_tasks_on_disjoint_machines_run_at_once_and_finish(deployed: Deployed) -> None:
    d = deployed
    c, e = d.ips[2], d.ips[3]
    try:
        for name, ip in (("par-a", c), ("par-b", e)):
            p = cli(d, "add", ip, "--prefix", name, "--proxy-node", d.proxy,
                    "--credential", "login", "--name", name, "--no-wait")  # fmt: skip
            assert p.returncode == 0, p.stderr

        def both_jobs() -> bool:
            jobs = d.get("jobs", "-n", NS)["items"]
            owners = {j["metadata"]["ownerReferences"][0]["name"] for j in jobs}
            return {"par-a", "par-b"} <= owners

        wait_for(both_jobs, "both tasks' Jobs at the same time", 60)
        for name in ("par-a", "par-b"):
            p = cli(d, "watch", name, "--timeout", "180")
            assert p.returncode == 0, p.stdout + p.stderr
            assert f"nodetask/{name} ready: 1/1 joined" in p.stdout
    finally:
        d.delete_task("par-a")
        d.delete_task("par-b")


def test_biggest_task_through_the_webhook(deployed: Deployed, tmp_path: Path) -> None:
    """5,000 addresses (the most a task takes): Node lookups by name for 2 s (the
    webhook's budget), the rest by hostname label; admitted (the apiserver gives the
    webhook 10 s, then refuses the task: failurePolicy Fail), the user warned; a
    generated name that is a Node's hostname is not used. How long admission took is
    in the operator's log (printed), not asserted."""
    d = deployed
    ips = [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(5000)]
    body = add_task("big", ips, d.proxy, prefix="big")
    p = d.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(body),
        check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    names = json.loads(p.stdout)["spec"]["nodeNamesOverride"]
    assert len(names) == 5000
    assert len(set(names.values())) == 5000
    log = [ln for ln in d.operator_log().splitlines() if "admission: task big" in ln]
    print(f"5,000-machine task admitted (server dry run): {log[-1:]}")
    if "by their kubernetes.io/hostname label" not in p.stderr:
        assert " 0 of them by hostname label" in log[-1]


def test_cli_big_task_from_file(deployed: Deployed, tmp_path: Path) -> None:
    d = deployed
    ips = tmp_path / "ips"
    ips.write_text("# machines\n" + "\n".join(f"10.201.0.{i}, 10.201.1.{i}" for i in range(1, 251)))
    p = cli(d, "add", "--from-file", str(ips), "--prefix", "f", "--proxy-node", d.proxy,
            "--credential", "login", "--dry-run=server", "-o", "json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["spec"]["nodeNamesOverride"]) == 500


def test_certificate_near_its_end_is_renewed_and_ca_bundle_stays(deployed: Deployed) -> None:
    """A serving certificate in its last days is replaced from the same CA: the
    caBundle does not change, so the old certificate and the new one are both accepted
    while replicas switch over."""
    d = deployed
    hosts = service_hosts("penetrator-webhook", NS)
    data = d.get("secret", "-n", NS, "penetrator-webhook-tls")["data"]
    ca_pem, ca_key_pem = (base64.b64decode(data[k]) for k in ("ca.crt", "ca.key"))
    ca = x509.load_pem_x509_certificates(ca_pem)[0]
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    born = datetime.now(UTC) - (SERVING_VALIDITY - RENEW_BEFORE) - timedelta(days=1)
    cert_pem, key_pem = sign_serving(ca, ca_key, hosts, born)
    old = ServingCert(ca_pem, cert_pem, key_pem, ca_key_pem)
    assert not usable(old, hosts)
    patch = json.dumps({"data": old.as_secret_data()})
    d.kubectl("-n", NS, "patch", "secret", "penetrator-webhook-tls", "--type=merge", "-p", patch)

    def renewed() -> bool:
        now = d.get("secret", "-n", NS, "penetrator-webhook-tls")["data"]
        return now["tls.crt"] != old.as_secret_data()["tls.crt"]

    wait_for(renewed, "a fresh serving certificate", 60)
    now = d.get("secret", "-n", NS, "penetrator-webhook-tls")["data"]
    assert now["ca.crt"] == data["ca.crt"]
    assert now["ca.key"] == data["ca.key"]
    config = d.get("validatingwebhookconfiguration", "penetrator.nodetask.apps.superedge.io")
    assert config["webhooks"][0]["clientConfig"]["caBundle"] == data["ca.crt"]
    x509.load_pem_x509_certificate(base64.b64decode(now["tls.crt"])).verify_directly_issued_by(ca)
    wait_for(lambda: webhook_ready(d), "the webhook to serve the new certificate", 60)


def test_cli_live_view_in_a_terminal(deployed: Deployed) -> None:
    """On a terminal `reinstall` follows with the rich view (bar, phases, rate)."""
    d = deployed
    main, tty = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    try:
        proc = subprocess.Popen(
            [str(venv_bin() / "penetrator"), "reinstall", f"live-1={d.ips[3]}",
             "--proxy-node", d.proxy, "--credential", "login", "--name", "live",
             "--kubeconfig", str(d.info.kubeconfig)],
            stdin=subprocess.DEVNULL, stdout=tty, stderr=tty, env=env,
        )  # fmt: skip
        os.close(tty)
        out = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=240) == 0
        text = out.decode(errors="replace")
        print(text[-3000:])
        assert "nodetask/" in text
        assert "1/1 joined" in text
        assert "joined/min" in text
        assert "━" in text  # the bar
    finally:
        os.close(main)
        d.delete_task("live")
