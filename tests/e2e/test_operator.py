"""The operator end to end in the sandbox: the real control plane, a real kubelet
running the Job's pod on the proxy node, real sshd machines behind NAT, the real
join program. The operator runs as a subprocess with the admin kubeconfig (the
same command the Deployment runs in-cluster).

A task created with kubectl gets its ConfigMap (no secret), Secret and exactly one
Job, owned by the task and named by its annotations; the Job's pod lands on the
proxy node; the machines join and the task turns ready; deleting the task
garbage-collects its objects; no secret appears in ConfigMaps, Events, the task
or the operator's log. An operator SIGKILLed while its Job runs and started again
finishes the task with that one Job (a watch on the task's Jobs) and every machine
installed once (the machines' own record); of two operators at once only the Lease's
holder acts, and the other takes over when the holder is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from penetrator.api import NODE_LABEL
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.deploy import foundation, merge, sandbox_settings
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.lifecycle import Sandbox, down

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the helpers
from operator_watch import JobWatch, joins, journal_length

from support import REPO, add_task_yaml, free_port, nodetask_yaml, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"
ADD = max(3, int(os.environ.get("PENETRATOR_OPERATOR_E2E_ADD", "20")))
"""Machines of the add task (the issue's acceptance: 20); three more are faulty."""
PER_INTRANET = ADD + 7
"""Intranet 1: the add task's, the faulty task's, then two for each of the replicas'
tasks. Intranet 2 (routed): all of them for the direct task killed mid-Job."""
LEASE_SECONDS = 9
"""Short for the takeover test, long enough that a holder's renewals (every third of
it, GET + PUT) stay inside its validity on 2 busy cores (6 s made the holder flap)."""


class Env:
    def __init__(
        self, sb: Sandbox, info: Any, log: Path, password: str, settings: dict[str, Any]
    ) -> None:
        self.sb = sb
        self.info = info
        self.log = log
        self.password = password
        self.settings = settings  # the operator's settings file (apiVersion ... Settings)
        self.proc: subprocess.Popen[bytes] | None = None
        self.watches: list[JobWatch] = []

    def spawn_operator(
        self, log: Path, changes: dict[str, Any] | None = None
    ) -> subprocess.Popen[bytes]:
        """`penetrator operator --config FILE`: ``self.settings`` with ``changes``."""
        config = log.with_suffix(".settings.yaml")
        config.write_text(yaml.safe_dump(merge(self.settings, changes or {})))
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "penetrator.cli", "operator",
                 "--kubeconfig", str(self.info.kubeconfig), "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip

    def start_operator(self) -> None:
        self.proc = self.spawn_operator(self.log)

    def job_watch(self, task: str) -> JobWatch:
        kubectl = [str(self.info.kubectl_binary), f"--kubeconfig={self.info.kubeconfig}"]
        watch = JobWatch(kubectl, NS, task)
        self.watches.append(watch)  # stopped by the fixture at the latest
        return watch

    def kill_operator(self) -> None:
        """SIGKILL: no cleanup, the Lease is not released."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def stop_operator(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        p = self.info.kubectl(*args, input=input, check=check)
        return str(p.stdout)

    def get(self, *args: str) -> Any:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(out) if out.strip() else None


@pytest.fixture(scope="module")
def env(sandbox_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    sb = sandbox_factory(machines=PER_INTRANET, intranets=1, routed=1)
    e: Env | None = None
    try:
        info = cluster_mod.start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        tmp = tmp_path_factory.mktemp("operator")
        info.kubectl("apply", "-f", "-", input=foundation())  # CRD, namespace, RBAC
        info.kubectl(
            "wait", "--for=condition=established", "--timeout=60s",
            "crd/nodetasks.nodetask.apps.superedge.io",
        )  # fmt: skip
        ssh = sb.status()["ssh"]
        password = Path(ssh["password_file"]).read_text().strip()
        info.kubectl(
            "-n", NS, "create", "secret", "generic", "login",
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        log = tmp / "operator.log"
        # the Job's image and the packages in it, imported into every node
        settings = merge(sandbox_settings(sb.name, info), {
            "apiVersion": "penetrator.superedge.io/v1alpha1",
            "kind": "Settings",
            "apiServer": str(info.server),
            "identity": "e2e-operator",
            "metricsPort": 0,
            "healthEndpoint": f"http://127.0.0.1:{free_port()}/healthz",
            "lease": {"durationSeconds": LEASE_SECONDS},
            "reconcile": {
                "pollInterval": 2,
                "backoffBase": 2,
                "maxAttempts": 2,
                "startTimeout": 60,
            },
            "jobPod": {"deadlineSeconds": 600},
            "job": {
                "timeouts": {"waitReady": 120, "connect": 8},
                "retry": {"attempts": 1},
            },
        })  # fmt: skip
        e = Env(sb, info, log, password, settings)
        e.start_operator()
        yield e
    finally:
        if e is not None:
            for w in e.watches:
                w.stop()
            e.stop_operator()
        down(sb.name)


def annotated(env: Env, name: str) -> dict[str, Any]:
    """Task ``name`` once it carries the names of its objects (job-name and
    configmap-name annotations)."""

    def ready() -> Any:
        t = env.get("nt", name)
        ann = (t or {}).get("metadata", {}).get("annotations", {})
        keys = ("app.superedge.io/job-name", "app.superedge.io/configmap-name")
        return t if all(ann.get(k) for k in keys) else None

    return dict(wait_for(ready, f"task {name}'s annotations", 60))


def owned_by(obj: dict[str, Any], task: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(
        r["uid"] == task["metadata"]["uid"]
        and r["kind"] == "NodeTask"
        and r.get("controller") is True
        and r.get("blockOwnerDeletion") is True
        for r in refs
    )


def test_add_task_through_the_proxy_node_joins_the_machines_and_is_collected(env: Env) -> None:
    ips = [m.ip for m in env.sb.topology.intranet(1).machines][:ADD]
    proxy = env.info.proxy_nodes[1]
    watch = env.job_watch("nodes")
    env.kubectl("apply", "-f", "-", input=add_task_yaml("nodes", ips, proxy))

    # the task's objects: names from its annotations, owned by it
    task = annotated(env, "nodes")
    ann = task["metadata"]["annotations"]
    job_name, cm_name = ann["app.superedge.io/job-name"], ann["app.superedge.io/configmap-name"]
    label = task["metadata"]["labels"][NODE_LABEL]
    job = wait_for(lambda: env.get("job", "-n", NS, job_name), "the Job", 60)
    cm = env.get("configmap", "-n", NS, cm_name)
    secret = env.get("secret", "-n", NS, f"{cm_name}-credentials")
    results = env.get("configmap", "-n", NS, f"{cm_name}-results")
    for obj in (job, cm, secret, results):
        assert obj is not None
        assert owned_by(obj, task), obj["metadata"]
    config = json.loads(cm["data"]["config.json"])
    assert sorted(m["ip"] for m in config["machines"]) == sorted(ips)
    assert set(secret["data"]) == {"token", "passwd"}
    text = json.dumps(cm) + json.dumps(results)
    assert env.password not in text

    # the pod runs on the proxy node
    pod = wait_for(
        lambda: (
            (p := env.get("pods", "-n", NS, "-l", f"job-name={job_name}"))
            and p["items"]
            and p["items"][0]["spec"].get("nodeName")
            and p["items"][0]
        ),
        "the Job's pod to be scheduled",
        60,
    )
    assert pod["spec"]["nodeName"] == proxy

    # the machines join; the task turns ready
    def ready() -> Any:
        t = env.get("nt", "nodes")
        return t if (t.get("status") or {}).get("nodetaskStatus") == "ready" else None

    try:
        task = wait_for(ready, "the task to be ready", 420)
    finally:
        watch.stop()
        print(env.log.read_text()[-5000:])
    status = task["status"]
    assert status["nodeStatus"] == {}
    assert status["planned"] == status["joined"] == len(ips)
    nodes = env.get("nodes", "-l", f"{NODE_LABEL}={label}")["items"]
    assert len(nodes) == len(ips)
    # no webhook here: the operator wrote the names it generated into the task, as
    # the webhook does on create, and the Nodes carry exactly those names
    assert task["spec"]["nodeNamesGenerated"] is True
    names = task["spec"]["nodeNamesOverride"]
    assert sorted(names.values()) == sorted(ips)
    assert {n["metadata"]["name"] for n in nodes} == set(names)
    for n in nodes:
        ready_cond = {c["type"]: c["status"] for c in n["status"]["conditions"]}
        assert ready_cond["Ready"] == "True"
    watch.assert_sound()
    assert watch.max_at_once() == 1, watch.summary()  # never two Jobs of the task at once
    # the Job's rights on the task's ConfigMaps went with it
    assert env.get("role", "-n", NS, job_name) is None
    assert env.get("rolebinding", "-n", NS, job_name) is None
    columns = env.kubectl("get", "nt", "nodes", "-o", "custom-columns=STATUS:status.nodetaskStatus")
    assert columns.split() == ["STATUS", "ready"]

    # no secret anywhere we write
    token_secrets = [
        s for s in env.get("secrets", "-n", "kube-system")["items"]
        if s.get("type") == "bootstrap.kubernetes.io/token"
    ]  # fmt: skip
    import base64

    token_parts = [base64.b64decode(s["data"]["token-secret"]).decode() for s in token_secrets]
    assert token_parts
    events = env.kubectl("get", "events", "-n", NS, "-o", "json")
    everything = (
        events
        + json.dumps(env.get("nt", "nodes"))
        + json.dumps(env.get("configmaps", "-n", NS))
        + json.dumps(env.get("jobs", "-n", NS))
        + env.log.read_text()
    )
    for secret_text in [env.password, *token_parts]:
        assert secret_text not in everything
    assert "RoundStarted" in events
    ready_events = [
        e for e in json.loads(events)["items"]
        if e["reason"] == "Ready" and e["involvedObject"]["name"] == "nodes"
    ]  # fmt: skip
    assert len(ready_events) == 1, ready_events  # said once, however many steps saw it

    # deleting the task collects its objects
    env.kubectl("delete", "nt", "nodes", "--wait=true", "--timeout=60s")

    def collected() -> bool:
        left = [
            env.get("configmap", "-n", NS, cm_name),
            env.get("configmap", "-n", NS, f"{cm_name}-results"),
            env.get("secret", "-n", NS, f"{cm_name}-credentials"),
            env.get("job", "-n", NS, job_name),
        ]
        return all(x is None for x in left)

    wait_for(collected, "garbage collection of the task's objects", 60)


def wait_status(env: Env, name: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
    def done() -> Any:
        t = env.get("nt", name)
        return t if t and (t.get("status") or {}).get("nodetaskStatus") in phases else None

    try:
        return dict(wait_for(done, f"task {name} to be {'/'.join(phases)}", timeout))
    except AssertionError:
        print(env.log.read_text()[-5000:])
        print(json.dumps(env.get("nt", name), indent=1)[-3000:])
        raise


def test_unjoinable_machines_are_retried_then_failed_while_the_others_join(env: Env) -> None:
    from penetrator_dev.sandbox.topology import Fault

    machines = [m.ip for m in env.sb.topology.intranet(1).machines]
    good, down_ip, bad_pw, bad_install = machines[ADD - 1 : ADD + 3]
    faults = {down_ip: Fault.DOWN, bad_pw: Fault.WRONG_PASSWORD, bad_install: Fault.INSTALL_FAILS}
    for ip, fault in faults.items():
        env.sb.fault(1, ip, fault)
    try:
        env.kubectl(
            "apply", "-f", "-",
            input=add_task_yaml("faulty", [good, *faults], env.info.proxy_nodes[1]),
        )  # fmt: skip
        task = wait_status(env, "faulty", ("failed",), 420)
    finally:
        for ip in faults:
            env.sb.fault(1, ip, None)
    st = task["status"]
    assert sorted(st["nodeStatus"].values()) == sorted(faults)
    assert (st["planned"], st["joined"], st["failed"]) == (4, 1, 3)
    for name in st["nodeStatus"]:
        m = st["machines"][name]
        assert m["phase"] == "failed"
        assert m["attempts"] == 2  # reconcile.maxAttempts
        assert m["lastError"]
    reasons = {c["type"]: c["reason"] for c in st["conditions"]}
    assert reasons["Ready"] == "MachinesFailed"
    events = env.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=faulty"
    )
    for reason in ("RoundStarted", "RoundFinished", "MachinesJoined", "MachinesFailed", "Failed"):
        assert reason in events, events
    assert env.password not in events
    env.kubectl("delete", "nt", "faulty", "--wait=true", "--timeout=60s")


def test_direct_mode_survives_an_operator_killed_while_its_job_runs(env: Env) -> None:
    """Direct mode (no proxy node, the Job runs in the cloud). The operator is
    SIGKILLed once the Job is surely running (a machine has begun its `edgeadm join`,
    not every machine has finished it), and started again: the task completes with
    that one Job, never two at once (a watch on its Jobs from before the task), and
    every machine says it was joined exactly once."""
    routed = [m.ip for m in env.sb.topology.intranet(2).machines]
    dirs = {ip: env.sb.machine_dir(2, ip) for ip in routed}
    skip = {ip: journal_length(d) for ip, d in dirs.items()}

    def having(event: str) -> list[str]:
        return [ip for ip in routed if any(j["event"] == event for j in joins(dirs[ip], skip[ip]))]

    watch = env.job_watch("direct")
    try:
        env.kubectl("apply", "-f", "-", input=add_task_yaml("direct", routed, None))
        job_name = annotated(env, "direct")["metadata"]["annotations"]["app.superedge.io/job-name"]
        # mid-Job: the Job's pod has begun installing and is not through
        wait_for(
            lambda: having("start") and len(having("end")) < len(routed),
            "a machine to begin its join",
            180,
            interval=0.2,
        )
        env.kill_operator()
        killed_at = time.time()
        in_flight = (len(having("start")), len(having("end")))
        pods = env.get("pods", "-n", NS, "-l", f"job-name={job_name}")["items"]
        assert [p["status"].get("phase") for p in pods] == ["Running"], pods
        assert pods[0]["spec"]["nodeName"] == env.info.control_plane_node
        time.sleep(3)  # the Job goes on alone
        env.start_operator()
        task = wait_status(env, "direct", ("ready",), 420)
    finally:
        watch.stop()
    print(f"killed with {in_flight[0]} joins begun, {in_flight[1]} ended\n{watch.summary()}")
    assert task["status"]["joined"] == len(routed)
    # the watch: one Job for the whole task, never two at once, and it ran through the kill
    watch.assert_sound()
    assert watch.max_at_once() == 1
    (job,) = watch.added()
    assert job.name == job_name
    done = watch.first_finished(job.uid)
    assert done is not None
    assert done.at > killed_at, "the Job must finish after the kill"
    assert [e.type for e in watch.events if e.uid == job.uid][-1] == "DELETED"  # then removed
    # each machine, by its own record: one join, and it succeeded
    for ip in routed:
        runs = joins(dirs[ip], skip[ip])
        once = [("start", None), ("end", 0)]
        assert [(j["event"], j.get("rc")) for j in runs] == once, (ip, runs)
    label = task["metadata"]["labels"][NODE_LABEL]
    nodes = env.get("nodes", "-l", f"{NODE_LABEL}={label}")["items"]
    assert sorted(
        a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"
    ) == sorted(routed)
    assert {runs[0]["node"] for ip in routed if (runs := joins(dirs[ip], skip[ip]))} == {
        n["metadata"]["name"] for n in nodes
    }
    env.kubectl("delete", "nt", "direct", "--wait=true", "--timeout=60s")


B_IDENTITY = "e2e-operator-b"
B_FIELD_MANAGER = "penetrator-operator-b"
A_IDENTITY, A_FIELD_MANAGER = "e2e-operator", "penetrator-operator"


def lease_spec(env: Env) -> dict[str, Any]:
    lease = env.get("lease", "-n", NS, "penetrator-operator")
    return dict((lease or {}).get("spec") or {})


def micro(t: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def acted_alone(env: Env, name: str, watch: JobWatch, identity: str, manager: str) -> None:
    """Task ``name`` was done by the replica ``identity`` / ``manager`` alone: one Job
    per round, never two at once, every Job, ConfigMap, Secret and status write and
    every Event of the task by it."""
    other = B_FIELD_MANAGER if manager == A_FIELD_MANAGER else A_FIELD_MANAGER
    watch.assert_sound()
    assert watch.max_at_once() == 1, watch.summary()
    task = env.get("nt", name)
    cm = task["metadata"]["annotations"]["app.superedge.io/configmap-name"]
    results = env.get("configmap", "-n", NS, f"{cm}-results")
    rounds = json.loads(results["data"]["results.json"])["round"]
    assert len(watch.added()) == rounds >= 1, watch.summary()  # exactly one Job per round
    for e in watch.added():
        assert manager in e.managers, e.managers
        assert other not in e.managers, e.managers
    shown = "--show-managed-fields"
    objects = [
        env.get("configmap", "-n", NS, f"{cm}-results", shown),
        env.get("configmap", "-n", NS, cm, shown),
        env.get("secret", "-n", NS, f"{cm}-credentials", shown),
    ]
    for obj in objects:
        writers = {f["manager"] for f in obj["metadata"]["managedFields"]}
        assert writers == {manager} or (writers - {manager}) <= {"penetrator-job"}, writers
        assert other not in writers
    status_writers = {
        f["manager"]
        for f in env.get("nt", name, shown)["metadata"]["managedFields"]
        if f.get("subresource") == "status"
    }
    assert status_writers == {manager}, status_writers
    events = [
        e for e in env.get("events", "-n", NS)["items"] if e["involvedObject"]["name"] == name
    ]  # fmt: skip
    assert events
    assert {e.get("reportingInstance") for e in events} == {identity}, events


def test_of_two_operators_only_the_lease_holder_acts_and_the_other_takes_over(
    env: Env, tmp_path: Path
) -> None:
    """A second `penetrator operator` (identity B, its own field manager) beside the
    first (A, the Lease's holder): a task completes with one Job per round and only A
    acts (Lease, Jobs, objects, status, Events). A is SIGKILLed: B takes the Lease
    once it has expired (not before, and within one poll after) and does a second
    task alone."""
    ips = [m.ip for m in env.sb.topology.intranet(1).machines]
    first, second = ips[ADD + 3 : ADD + 5], ips[ADD + 5 : ADD + 7]
    proxy = env.info.proxy_nodes[1]
    if env.proc is None:
        env.start_operator()

    def holder_is(identity: str) -> bool:
        spec = lease_spec(env)
        fresh = "renewTime" in spec and time.time() - micro(spec["renewTime"]) < LEASE_SECONDS
        return bool(fresh and spec.get("holderIdentity") == identity)

    wait_for(lambda: holder_is(A_IDENTITY), "A to hold the Lease", 60, interval=0.5)
    b_log = tmp_path / "operator-b.log"
    b = env.spawn_operator(
        b_log,
        {
            "identity": B_IDENTITY,
            "fieldManager": B_FIELD_MANAGER,
            "healthEndpoint": f"http://127.0.0.1:{free_port()}/healthz",
        },
    )
    watches: list[JobWatch] = []
    try:
        wait_for(lambda: f"operator {B_IDENTITY} started" in b_log.read_text(), "B to start", 60)
        before = lease_spec(env)
        watches.append(w1 := env.job_watch("pair-1"))
        env.kubectl("apply", "-f", "-", input=add_task_yaml("pair-1", first, proxy))
        wait_status(env, "pair-1", ("ready",), 300)
        w1.stop()
        after = lease_spec(env)
        assert after["holderIdentity"] == A_IDENTITY
        assert after.get("leaseTransitions") == before.get("leaseTransitions")  # no hand-over
        acted_alone(env, "pair-1", w1, A_IDENTITY, A_FIELD_MANAGER)
        assert "leader:" not in b_log.read_text()  # B stood by the whole time

        # SIGKILL the holder: B takes over within the lease time and finishes a second task
        env.kill_operator()
        last_renew = micro(lease_spec(env)["renewTime"])
        watches.append(w2 := env.job_watch("pair-2"))
        env.kubectl("apply", "-f", "-", input=add_task_yaml("pair-2", second, proxy))
        wait_for(lambda: holder_is(B_IDENTITY), "B to take the Lease", 4 * LEASE_SECONDS, 0.2)
        taken = lease_spec(env)
        waited = micro(taken["acquireTime"]) - last_renew
        print(f"B took the Lease {waited:.2f}s after A's last renewal")
        # not before it expired; within B's poll (lease/5) and some slack (2 shared cores)
        assert LEASE_SECONDS <= waited <= LEASE_SECONDS * 1.2 + 3, waited
        assert taken["leaseTransitions"] == (after.get("leaseTransitions") or 0) + 1
        wait_status(env, "pair-2", ("ready",), 300)
        w2.stop()
        acted_alone(env, "pair-2", w2, B_IDENTITY, B_FIELD_MANAGER)
        assert f"leader: {B_IDENTITY} holds lease" in b_log.read_text()
    finally:
        for w in watches:
            w.stop()
        print(b_log.read_text()[-3000:] if b_log.exists() else "no log of B")
        if env.proc is None:
            env.start_operator()
        for name in ("pair-1", "pair-2"):  # while an operator runs (Kopf's finalizer)
            env.kubectl(
                "delete", "nt", name, "--ignore-not-found", "--wait=true", "--timeout=60s",
                check=False,
            )  # fmt: skip
        b.terminate()  # our child, by its PID
        try:
            b.wait(timeout=30)
        except subprocess.TimeoutExpired:
            b.kill()
            b.wait(timeout=30)


def node_by_ip(env: Env) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n in env.get("nodes")["items"]:
        for a in n["status"].get("addresses", []):
            if a["type"] == "InternalIP":
                out[a["address"]] = n
    return out


def joined_nodes(env: Env, ips: list[str]) -> dict[str, dict[str, Any]]:
    """node_by_ip once every machine of `ips` is a Node whose task is gone: those that
    are not Nodes yet (the add test did not run, or not first) are joined by a task of
    their own, deleted once ready."""
    missing = [ip for ip in ips if ip not in node_by_ip(env)]
    if missing:
        proxy = env.info.proxy_nodes[1]
        env.kubectl("apply", "-f", "-", input=add_task_yaml("reinstall-first", missing, proxy))
        wait_status(env, "reinstall-first", ("ready",), 420)
        env.kubectl("delete", "nt", "reinstall-first", "--wait=true", "--timeout=60s")
    return node_by_ip(env)


def test_reinstall_with_a_rename(env: Env) -> None:
    """Machines that are Nodes of a deleted task: reinstall one under a new name and
    one under its own name."""
    ips = [m.ip for m in env.sb.topology.intranet(1).machines][:2]
    before = joined_nodes(env, ips)
    old_names = [before[ip]["metadata"]["name"] for ip in ips]
    override = {"renamed-0": ips[0], old_names[1]: ips[1]}
    manifest = nodetask_yaml(
        "reinstall",
        nodeNamesOverride=override,
        sshCredential="login",
        proxyNode=env.info.proxy_nodes[1],
    )
    env.kubectl("apply", "-f", "-", input=manifest)
    task = wait_status(env, "reinstall", ("ready",), 420)
    label = task["metadata"]["labels"][NODE_LABEL]
    after = node_by_ip(env)
    assert after[ips[0]]["metadata"]["name"] == "renamed-0"
    assert after[ips[1]]["metadata"]["name"] == old_names[1]
    for ip in ips:
        assert after[ip]["metadata"]["labels"][NODE_LABEL] == label
    names = {n["metadata"]["name"] for n in env.get("nodes")["items"]}
    assert old_names[0] not in names  # the old name is gone
    env.kubectl("delete", "nt", "reinstall", "--wait=true", "--timeout=60s")


def host_key_fingerprint(sb: Sandbox, ip: str, role: str) -> str:
    import asyncssh

    from penetrator_dev.sandbox.machines import host_key_path

    path = host_key_path(sb.name, sb.topology.machine(1, ip).namespace, role)
    key = asyncssh.import_public_key(path.with_name(path.name + ".pub").read_text())
    fp: str = key.get_fingerprint("sha256")
    return fp


def test_a_host_key_pinned_in_one_round_holds_in_the_next_and_for_a_later_task(
    env: Env,
) -> None:
    """Round 1 meets the machine (its key pinned in the proxy node's store before the
    join, its result carrying the key) and fails its install. Once the operator has
    folded round 1 and its Job is gone (the task backs off, which the operator
    decides only when no Job of the task exists), the operator is stopped and the
    machine starts presenting another host key; round 2, a new Job in a new pod,
    refuses it, naming both keys, and so does another task of the same proxy node."""
    from penetrator_dev.sandbox.machines import ROLE_MAIN, ROLE_NEW_HOST_KEY
    from penetrator_dev.sandbox.topology import Fault

    ip = [m.ip for m in env.sb.topology.intranet(1).machines][ADD + 2]
    env.sb.fault(1, ip, Fault.INSTALL_FAILS)
    # a long back-off after round 1: a state that holds while the machine is changed
    env.stop_operator()
    env.settings["reconcile"]["backoffBase"] = 600
    env.start_operator()
    try:
        env.kubectl(
            "apply", "-f", "-", input=add_task_yaml("pinned", [ip], env.info.proxy_nodes[1])
        )  # fmt: skip
        task = annotated(env, "pinned")
        cm_name = task["metadata"]["annotations"]["app.superedge.io/configmap-name"]
        job_name = task["metadata"]["annotations"]["app.superedge.io/job-name"]
        old_fp = host_key_fingerprint(env.sb, ip, ROLE_MAIN)
        proxy = env.info.proxy_nodes[1]
        store = "penetrator-hostkeys-" + env.get("node", proxy)["metadata"]["uid"]

        def backing_off() -> bool:
            t = env.get("nt", "pinned") or {}
            conditions = (t.get("status") or {}).get("conditions") or []
            return any(
                c.get("type") == "Progressing" and c.get("reason") == "BackingOff"
                for c in conditions
            )

        wait_for(backing_off, "round 1 folded and its Job gone (the back-off)", 240)
        env.stop_operator()
        env.settings["reconcile"]["backoffBase"] = 2  # round 2 as soon as it starts again
        assert env.get("job", "-n", NS, job_name) is None
        results = env.get("configmap", "-n", NS, f"{cm_name}-results")
        doc = json.loads(results["data"]["results.json"])
        assert doc["round"] == 1
        assert doc["finished"]
        (entry,) = doc["machines"].values()
        assert entry["attempts"] == 1
        assert entry["error"]
        assert entry["host_key"] == old_fp  # reported in the results document
        pins = env.get("configmap", "-n", NS, store)["data"]["pins"]
        assert f"{ip} {old_fp}\n" in pins  # and kept per proxy node
        env.sb.fault(1, ip, Fault.NEW_HOST_KEY)  # also ends install-fails
        new_fp = host_key_fingerprint(env.sb, ip, ROLE_NEW_HOST_KEY)
        assert new_fp != old_fp
    finally:
        if env.proc is None or env.settings["reconcile"]["backoffBase"] != 2:
            env.stop_operator()
            env.settings["reconcile"]["backoffBase"] = 2
            env.start_operator()
    try:
        task = wait_status(env, "pinned", ("failed",), 300)
    finally:
        env.sb.fault(1, ip, None)
    (m,) = task["status"]["machines"].values()
    assert m["attempts"] == 2
    assert "changed" in m["lastError"]
    assert old_fp in m["lastError"]
    assert new_fp in m["lastError"]
    # the pin lives in the proxy node's store, not in the task's Secret, and round 2
    # did not replace it anywhere
    secret = env.get("secret", "-n", NS, f"{cm_name}-credentials")
    assert "host_key_pins" not in secret["data"]
    store_cm = env.get("configmap", "-n", NS, store)
    assert f"{ip} {old_fp}\n" in store_cm["data"]["pins"]
    assert not store_cm["metadata"].get("ownerReferences")  # it outlives the task
    results = env.get("configmap", "-n", NS, f"{cm_name}-results")
    (entry,) = json.loads(results["data"]["results.json"])["machines"].values()
    assert entry["host_key"] == old_fp
    env.kubectl("delete", "nt", "pinned", "--wait=true", "--timeout=60s")
    # a later task of the same proxy node sees the same pin
    env.sb.fault(1, ip, Fault.NEW_HOST_KEY)
    try:
        env.kubectl("apply", "-f", "-", input=add_task_yaml("pinned2", [ip], proxy))
        later = wait_status(env, "pinned2", ("failed",), 300)
    finally:
        env.sb.fault(1, ip, None)
    (m,) = later["status"]["machines"].values()
    assert old_fp in m["lastError"]
    assert new_fp in m["lastError"]
    assert env.get("configmap", "-n", NS, store)["data"]["pins"] == store_cm["data"]["pins"]
    env.kubectl("delete", "nt", "pinned2", "--wait=true", "--timeout=60s")
    # a store that cannot be parsed is never read as empty: no Job, the line named
    bad = json.dumps({"data": {"pins": store_cm["data"]["pins"] + "10.1.2.3 junk\n"}})
    env.kubectl("-n", NS, "patch", "configmap", store, "--type=merge", "-p", bad)
    try:
        env.kubectl("apply", "-f", "-", input=add_task_yaml("pinned3", [ip], proxy))

        def cannot_start() -> str | None:
            t = env.get("nt", "pinned3") or {}
            for c in (t.get("status") or {}).get("conditions") or []:
                if c.get("reason") == "CannotStart":
                    return str(c.get("message"))
            return None

        message = wait_for(cannot_start, "the task stopped by the unreadable store", 120)
        assert f"{store}: key pins: pins line" in str(message)
        assert "not a SHA256 fingerprint; correct or delete that line" in str(message)
        job3 = annotated(env, "pinned3")["metadata"]["annotations"]["app.superedge.io/job-name"]
        assert env.get("job", "-n", NS, job3) is None
    finally:
        fix = json.dumps({"data": {"pins": store_cm["data"]["pins"]}})
        env.kubectl("-n", NS, "patch", "configmap", store, "--type=merge", "-p", fix)
        env.kubectl("delete", "nt", "pinned3", "--wait=true", "--timeout=60s")
