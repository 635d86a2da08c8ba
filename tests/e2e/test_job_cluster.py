"""penetrator.job.cluster against the real apiserver: skip-if-labelled, Nodes by IP,
wait for Ready (the job only reads Nodes: the operator writes them)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from penetrator.api import NODE_LABEL, MachinePhase
from penetrator.api.hostkeys import PinRefused, store_name
from penetrator.api.jobconfig import HostKeyPolicy, JobConfig
from penetrator.api.results import MachineResult
from penetrator.job.cluster import Cluster
from penetrator.job.credentials import Credentials
from penetrator.job.hostkeys import HostKeyStore
from penetrator.job.pinstore import PinStore, PinStoreError
from penetrator.job.runner import JobContext, install_machine
from penetrator.k8s.builders import build_host_key_store
from penetrator_dev.testenv.controlplane import ControlPlane
from support import free_port

pytestmark = [pytest.mark.cluster]

LABEL = "jobtest-abc123"
TOKEN = "abcdef.0123456789abcdef"


def node(name: str, ip: str | None = None, label: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    if label:
        obj["metadata"]["labels"] = {NODE_LABEL: label}
    return obj


def set_status(cp: ControlPlane, name: str, ip: str | None, ready: bool | None) -> None:
    status: dict[str, Any] = {}
    if ip:
        status["addresses"] = [{"type": "InternalIP", "address": ip}]
    if ready is not None:
        status["conditions"] = [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Test",
                "message": "set by test_job_cluster",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    cp.kubectl(
        "patch", "node", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


@pytest.fixture
def nodes(cluster: ControlPlane) -> Iterator[list[str]]:
    """Nodes created by the test (names appended); all deleted afterwards."""
    made: list[str] = []
    try:
        yield made
    finally:
        if made:
            cluster.kubectl("delete", "node", "--ignore-not-found", "--wait=false", *made)


def create(cp: ControlPlane, made: list[str], name: str, ip: str | None = None,
           label: str | None = None, ready: bool | None = None) -> None:  # fmt: skip
    cp.kubectl("create", "-f", "-", input=json.dumps(node(name, ip, label)))
    made.append(name)
    if ip or ready is not None:
        set_status(cp, name, ip, ready)


@pytest.fixture
async def api(cluster: ControlPlane) -> AsyncIterator[Cluster]:
    c = Cluster.from_kubeconfig(Path(cluster.kubeconfig), interval=0.3)
    try:
        yield c
    finally:
        await c.close()


def labels_of(cp: ControlPlane, name: str) -> dict[str, str]:
    out = cp.kubectl("get", "node", name, "-o", "json").stdout
    labels: dict[str, str] = json.loads(out)["metadata"].get("labels", {})
    return labels


def exists(cp: ControlPlane, name: str) -> bool:
    return bool(cp.kubectl("get", "node", name, "--ignore-not-found", "-o", "name").stdout.strip())


async def test_get(cluster: ControlPlane, nodes: list[str], api: Cluster) -> None:
    create(cluster, nodes, "jt-labelled", "10.99.0.1", LABEL, ready=True)
    create(cluster, nodes, "jt-plain", "10.99.0.2")
    got = await api.get_node("jt-labelled")
    assert got is not None
    assert got.labelled(LABEL)
    assert got.ready
    assert got.addresses == ("10.99.0.1",)
    plain = await api.get_node("jt-plain")
    assert plain is not None
    assert not plain.labelled(LABEL)
    assert await api.get_node("jt-missing") is None
    assert [n.name for n in await api.nodes_with_ip("10.99.0.2")] == ["jt-plain"]


async def test_nodes_left_by_a_rename_are_reported_not_deleted(
    cluster: ControlPlane, nodes: list[str], api: Cluster
) -> None:
    create(cluster, nodes, "jt-same-name", "10.99.1.9")
    create(cluster, nodes, "jt-old-name", "10.99.1.1")  # the machine's IP, another name
    create(cluster, nodes, "jt-keep", "10.99.1.2")  # neither
    create(cluster, nodes, "jt-ours", "10.99.1.3", LABEL)  # already this task's
    assert await api.stale_by_address("jt-same-name", "10.99.1.1", LABEL) == ["jt-old-name"]
    assert await api.stale_by_address("jt-new", "10.99.1.3", LABEL) == []
    assert exists(cluster, "jt-old-name")  # the operator deletes it, not the job


async def test_wait_ready(cluster: ControlPlane, nodes: list[str], api: Cluster) -> None:
    waiter = asyncio.create_task(api.wait_ready("jt-late", 30))
    await asyncio.sleep(0.5)
    assert not waiter.done()
    create(cluster, nodes, "jt-late", "10.99.2.1", ready=False)  # registers, not Ready
    await asyncio.sleep(0.8)
    assert not waiter.done()
    await asyncio.to_thread(set_status, cluster, "jt-late", None, True)
    info = await asyncio.wait_for(waiter, 15)
    assert info.ready
    with pytest.raises(TimeoutError, match=r"jt-nope not registered after 0\.5s"):
        await api.wait_ready("jt-nope", 0.5)
    create(cluster, nodes, "jt-never-ready", ready=False)
    with pytest.raises(TimeoutError, match="registered but not Ready"):
        await api.wait_ready("jt-never-ready", 0.7)


async def test_a_labelled_node_is_skipped_without_connecting(
    cluster: ControlPlane, nodes: list[str], api: Cluster
) -> None:
    create(cluster, nodes, "jt-done", "127.0.0.1", LABEL, ready=True)
    cfg = JobConfig.model_validate(
        {
            "machines": [{"name": "jt-done", "ip": "127.0.0.1"}],
            "sshPort": 1,  # loopback, nothing listens: a connect would fail
            "taskLabel": LABEL,
            "apiServer": "127.0.0.1:6443",
            "caCertHash": "sha256:" + "0" * 64,
            "packages": {"amd64": "/nonexistent"},
            "retry": {"attempts": 1},
        }
    )
    creds = Credentials("pw-unused", None, TOKEN, None)
    ctx = JobContext(cfg, creds, HostKeyStore(HostKeyPolicy.TOFU), {}, api, None,
                     random.Random(0))  # fmt: skip
    r = await install_machine(ctx, cfg.machines[0], MachineResult(name="jt-done", ip="127.0.0.1"))
    assert r.phase is MachinePhase.JOINED
    assert r.skipped
    assert "connect" not in r.durations
    # the same machine under another task's label is not skipped (and fails to connect here)
    other = cfg.model_copy(update={"task_label": "other-task"})
    ctx2 = JobContext(other, creds, HostKeyStore(HostKeyPolicy.TOFU), {}, api, None)
    r2 = await install_machine(
        ctx2, other.machines[0], MachineResult(name="jt-done", ip="127.0.0.1")
    )
    assert r2.phase is MachinePhase.FAILED
    assert r2.error == "connection refused on port 1"


def test_cli_reports_into_the_results_configmap(cluster: ControlPlane, tmp_path: Path) -> None:
    """`penetrator job --kubeconfig --report-configmap`: a machine that refuses SSH
    ends `failed` in the operator's results ConfigMap, with the job's message."""
    import os
    import subprocess
    import sys

    import yaml

    from penetrator.api.results import RESULTS_KEY

    ns = f"jobtest-{os.getpid()}"
    cluster.kubectl("create", "namespace", ns)
    try:
        cluster.kubectl("-n", ns, "create", "configmap", "results-1")
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "passwd").write_text("pw-unused\n")
        (tmp_path / "creds" / "token").write_text(TOKEN)
        cfg = {
            "machines": [{"name": "jt-refuses", "ip": "127.0.0.1"}],
            "sshPort": 1,
            "taskLabel": LABEL,
            "apiServer": "127.0.0.1:6443",
            "caCertHash": "sha256:" + "0" * 64,
            "template": {"join": [["true"]]},
            "retry": {"attempts": 1},
            "namespace": ns,  # where the results ConfigMap lives
        }
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
        cp = subprocess.run(
            [sys.executable, "-m", "penetrator.cli", "job", "--config", str(tmp_path / "job.yaml"),
             "--credentials", str(tmp_path / "creds"), "--kubeconfig", str(cluster.kubeconfig),
             "--report-configmap", "results-1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cp.returncode == 1, cp.stderr
        line = json.loads(cp.stdout.splitlines()[0])
        assert line["error"] == "connection refused on port 1"
        out = cluster.kubectl("-n", ns, "get", "configmap", "results-1", "-o", "json").stdout
        doc = json.loads(json.loads(out)["data"][RESULTS_KEY])
        assert doc["done"] is True
        m = doc["machines"]["jt-refuses"]
        assert m["phase"] == "failed"
        assert m["ip"] == "127.0.0.1"
        assert m["error"] == "connection refused on port 1"
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false")


# ------------------------------------ the job's API calls: final and transient


@pytest.fixture
def limited(cluster: ControlPlane, tmp_path: Path) -> Iterator[Path]:
    """The kubeconfig of a service account allowed to get Nodes but not to list
    them; everything removed afterwards."""
    import yaml

    tag = f"jobtest-rbac-{os.getpid()}"
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tag}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "job", "namespace": tag}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": tag},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": tag},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": tag},
         "subjects": [{"kind": "ServiceAccount", "name": "job", "namespace": tag}]},
    ]  # fmt: skip
    try:
        items = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        cluster.kubectl("create", "-f", "-", input=items)
        token = cluster.kubectl("-n", tag, "create", "token", "job", "--duration=1h").stdout.strip()
        admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
        kc = {
            "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
            "users": [{"name": "job", "user": {"token": token}}],
            "contexts": [{"name": "job", "context": {
                "cluster": admin["clusters"][0]["name"], "user": "job"}}],
            "current-context": "job",
        }  # fmt: skip
        path = tmp_path / "job.kubeconfig"
        path.write_text(yaml.safe_dump(kc))
        path.chmod(0o600)
        yield path
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            cluster.kubectl("delete", kind, tag, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "namespace", tag, "--ignore-not-found", "--wait=false",
                        check=False)  # fmt: skip


async def test_a_403_is_final_at_once_with_the_answer_named(
    cluster: ControlPlane, nodes: list[str], limited: Path
) -> None:
    from penetrator.job.cluster import ClusterError

    create(cluster, nodes, "jt-rbac", "10.99.3.1", ready=True)
    c = Cluster.from_kubeconfig(limited, interval=0.3)
    try:
        assert await c.get_node("jt-rbac", 5) is not None  # the account works
        with pytest.raises(ClusterError) as denied:
            await c.wait_ready("jt-rbac", 20)
        assert denied.value.tries == 1  # not retried for 20 s
        assert denied.value.answer.code == 403
        assert str(denied.value).startswith("Kubernetes API: list nodes refused: 403 ")
        assert "cannot list resource" in str(denied.value)
    finally:
        await c.close()


async def test_an_api_server_out_of_reach_is_retried_within_the_budget(
    cluster: ControlPlane, nodes: list[str], tmp_path: Path
) -> None:
    """Connection refused (nothing listens on a loopback port yet) is transient:
    given up when the budget is spent; ridden out when the real API server
    becomes reachable there (a plain TCP relay to it, started later)."""
    import yaml

    from penetrator.job.cluster import ClusterError

    create(cluster, nodes, "jt-late-api", "10.99.4.1", ready=True)
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    target = admin["clusters"][0]["cluster"]["server"].removeprefix("https://")
    host, _, tport = target.rpartition(":")
    assert host in ("127.0.0.1", "localhost"), target
    port = free_port()
    admin["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kc = tmp_path / "relay.kubeconfig"
    kc.write_text(yaml.safe_dump(admin))
    kc.chmod(0o600)

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(host, int(tport))
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    c = Cluster.from_kubeconfig(kc, interval=0.3)
    server: asyncio.Server | None = None
    try:
        with pytest.raises(ClusterError) as gone:
            await c.get_node("jt-late-api", 2)
        assert gone.value.tries >= 2
        assert gone.value.answer.code is None
        assert "still failing after" in str(gone.value)
        assert "cannot reach the API server" in str(gone.value)

        got = asyncio.create_task(c.get_node("jt-late-api", 30))
        ready = asyncio.create_task(c.wait_ready("jt-late-api", 30))
        await asyncio.sleep(1.5)
        assert not got.done()
        assert not ready.done()
        server = await asyncio.start_server(relay, "127.0.0.1", port)
        assert (await asyncio.wait_for(got, 30)) is not None
        assert (await asyncio.wait_for(ready, 30)).ready
    finally:
        await c.close()
        if server is not None:
            server.close()


# ------------------------------------------------ the proxy node's host-key store

FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "B" * 43


@pytest.fixture
def store(cluster: ControlPlane) -> Iterator[str]:
    """An empty store ConfigMap (as the operator creates it), deleted afterwards."""
    name = store_name(None) + "-" + format(random.getrandbits(32), "08x")
    cm = build_host_key_store(name, None).to_dict()
    cluster.kubectl("create", "namespace", "edge-system", check=False)
    cluster.kubectl("create", "-f", "-", input=json.dumps(cm))
    try:
        yield name
    finally:
        cluster.kubectl("-n", "edge-system", "delete", "configmap", name, "--ignore-not-found")


def stored(cp: ControlPlane, name: str) -> str:
    out = cp.kubectl("-n", "edge-system", "get", "configmap", name, "-o", "json").stdout
    text: str = json.loads(out)["data"]["pins"]
    return text


async def test_pins_are_durable_when_add_returns_and_never_replaced(
    cluster: ControlPlane, api: Cluster, store: str
) -> None:
    """Two Jobs of one proxy node pin at once (conflicting writes are merged, not lost);
    each ``add`` returns only once its pin is in the object; a later Job sees them all
    and cannot replace one."""
    one, two = (PinStore(api, store, "edge-system", 10) for _ in range(2))
    assert await one.load() == {}
    assert await two.load() == {}
    hosts = [f"10.77.{i // 250}.{i % 250 + 1}" for i in range(60)]
    written: list[str] = []

    async def pin(s: PinStore, host: str) -> None:
        await s.add(host, FP_A)
        written.append(host)
        assert f"{host} {FP_A}" in stored(cluster, store)  # durable when add returns

    await asyncio.gather(*(pin(one if i % 2 else two, h) for i, h in enumerate(hosts)))
    assert sorted(written) == sorted(hosts)
    assert one.writes + two.writes < len(hosts)  # batched
    later = PinStore(api, store, "edge-system", 10)
    assert await later.load() == dict.fromkeys(hosts, FP_A)
    await later.add(hosts[0], FP_A)  # the same pin: nothing to do
    with pytest.raises(PinRefused, match=r"pinned to .* by an earlier task"):
        await later.add(hosts[0], FP_B)
    assert stored(cluster, store).count(hosts[0] + " ") == 1


async def test_an_unreadable_or_missing_store_is_an_error_naming_it(
    cluster: ControlPlane, api: Cluster, store: str
) -> None:
    patch = json.dumps({"data": {"pins": f"10.0.0.1 {FP_A}\n10.0.0.2 not-a-fingerprint\n"}})
    cluster.kubectl("-n", "edge-system", "patch", "configmap", store, "-p", patch)
    with pytest.raises(PinStoreError, match=rf"{store}: key pins: pins line 2: not a SHA256"):
        await PinStore(api, store, "edge-system", 5).load()
    with pytest.raises(PinStoreError, match="404"):
        await PinStore(api, store + "-gone", "edge-system", 5).load()
