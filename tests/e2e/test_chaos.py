"""Chaos: one task installs every machine of an intranet while the cluster is hurt,
and still every machine joins exactly once.

Faults (``penetrator_dev.sandbox.chaos``: one interface, so the way pods run can
change): the operator's container SIGKILLed (its kubelet starts it again), the
Job's pod deleted once (its machines under way finish, the others go to the next
round), kube-apiserver restarted once, etcd restarted once. Each fault fires at a
point of the task's progress drawn from a seeded random source (the seed is
printed; ``PENETRATOR_CHAOS_SEED`` replays a run): when that many machines have
joined by their own record. A fault returns once the thing is back, so the
checks never race it; every wait is bounded.

Checked at the end: every machine is a Node of the task; a watch on the task's
Jobs never saw two at once (a gap in the watch through the apiserver restart is
filled by a list, counted so that it can only make "at once" larger); each
machine's own log (``edgeadm.log``) shows exactly one successful join; and no
credential byte (the password, the SSH private key, the bootstrap token) is in
any object but Secrets, in any Event or in any log.

Two forms: the short one by default (CI: 20 machines, 2 operator kills and each
other fault once), the long one with ``PENETRATOR_CHAOS=long`` (100 machines, 5
operator kills); README "Tests" gives both commands.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from penetrator.api import JOB_NAME_ANNOTATION, NODE_LABEL
from penetrator_dev.sandbox.chaos import ClusterFaults, cluster_faults
from penetrator_dev.sandbox.cluster import SandboxCluster, cluster_dir
from penetrator_dev.sandbox.deploy import NAMESPACE as NS
from penetrator_dev.sandbox.lifecycle import Sandbox
from penetrator_dev.sandbox.state import state_dir
from support import Deployment, add_task_yaml, wait_for

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the helpers
from operator_watch import JobWatch, joins

pytestmark = [pytest.mark.netns, pytest.mark.cluster, pytest.mark.chaos]


@dataclass(frozen=True)
class Form:
    machines: int
    operator_kills: int
    concurrency: int
    """The Job's machines at once: low, so the faults fall inside the install."""
    timeout_s: float


FORMS = {
    "short": Form(machines=20, operator_kills=2, concurrency=2, timeout_s=600),
    "long": Form(machines=100, operator_kills=5, concurrency=3, timeout_s=900),
}
FORM_NAME = os.environ.get("PENETRATOR_CHAOS", "short")
if FORM_NAME not in FORMS:
    raise ValueError(f"PENETRATOR_CHAOS={FORM_NAME!r}: use short or long")
FORM = FORMS[FORM_NAME]
TASK = "chaos"

DEPLOYMENT = Deployment(
    machines=FORM.machines,
    settings={
        "reconcile": {"pollInterval": 2, "backoffBase": 2, "startTimeout": 120},
        "job": {"concurrency": FORM.concurrency, "timeouts": {"waitReady": 120}},
    },
)


def get(info: SandboxCluster, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


@dataclass
class Fault:
    at: int
    """Fires once this many machines have joined (by their own record)."""
    kind: str
    fired_at: float | None = None
    joined_then: int = 0


def schedule(rng: random.Random, planned: int) -> list[Fault]:
    """The faults in a seeded order at seeded points of the install: the Job's pod
    within its first half (a Job is surely running then), the others anywhere in
    the first 80 %."""
    kinds = ["kill_operator"] * FORM.operator_kills + ["restart_apiserver", "restart_etcd"]
    rng.shuffle(kinds)
    points = sorted(rng.randint(1, max(1, planned * 8 // 10)) for _ in kinds)
    faults = [Fault(at, kind) for at, kind in zip(points, kinds, strict=True)]
    faults.append(Fault(rng.randint(1, max(1, planned // 2)), "delete_job_pod"))
    return sorted(faults, key=lambda f: f.at)


def joined_machines(sb: Sandbox, ips: list[str]) -> list[str]:
    """The machines whose own log shows a successful join."""
    return [
        ip
        for ip in ips
        if any(j["event"] == "end" and j.get("rc") == 0 for j in joins(sb.machine_dir(1, ip)))
    ]


def job_pod(info: SandboxCluster) -> str | None:
    """The running pod of the task's Job, if there is one."""
    task = get(info, "nt", TASK)
    job = ((task or {}).get("metadata", {}).get("annotations") or {}).get(JOB_NAME_ANNOTATION)
    pods = get(info, "pods", "-n", NS, "-l", f"job-name={job}") if job else None
    running = [
        p["metadata"]["name"]
        for p in (pods or {}).get("items", [])
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    return running[0] if running else None


def fire(fault: Fault, faults: ClusterFaults, info: SandboxCluster) -> None:
    if fault.kind == "kill_operator":
        faults.kill_operator()
    elif fault.kind == "restart_apiserver":
        faults.restart_apiserver()
    elif fault.kind == "restart_etcd":
        faults.restart_etcd()
    else:
        faults.delete_pod(wait_for(lambda: job_pod(info), "the Job's pod to run", 180))


def ready(info: SandboxCluster) -> dict[str, Any] | None:
    task = get(info, "nt", TASK)
    return task if ((task or {}).get("status") or {}).get("nodetaskStatus") == "ready" else None


def keep_logs(sb: Sandbox, info: SandboxCluster) -> None:
    """The logs (control plane, pods, sandbox processes, machines) copied out before
    the sandbox goes: /tmp/penetrator-chaos-<sandbox>/."""
    dest = Path(f"/tmp/penetrator-chaos-{sb.name}")
    for i, path in enumerate(log_files(sb, info, check=False)):
        target = dest / f"{i:04d}-{path.parent.name}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    print(f"logs kept in {dest}")


@pytest.fixture
def job_watch(deployed: tuple[Sandbox, SandboxCluster]) -> Iterator[JobWatch]:
    _, info = deployed
    kubectl = [str(info.kubectl_binary), f"--kubeconfig={info.kubeconfig}"]
    # through an apiserver restart: up to 10 minutes of failed reconnects
    watch = JobWatch(kubectl, NS, TASK, max_restarts=1200, relist_on_gone=True)
    try:
        yield watch
    finally:
        watch.stop()


@pytest.mark.timeout(FORM.timeout_s + 600)
def test_every_machine_joins_once_through_operator_kills_and_control_plane_restarts(
    deployed: tuple[Sandbox, SandboxCluster], job_watch: JobWatch
) -> None:
    sb, info = deployed
    try:
        run_chaos(sb, info, job_watch)
    except BaseException:
        keep_logs(sb, info)
        raise


def run_chaos(sb: Sandbox, info: SandboxCluster, job_watch: JobWatch) -> None:
    seed = int(os.environ.get("PENETRATOR_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"chaos form {FORM_NAME}: {FORM}; seed {seed} (PENETRATOR_CHAOS_SEED={seed} replays)")
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    faults = cluster_faults(sb, info)
    pending = schedule(random.Random(seed), len(ips))
    print("faults at machines joined:", [(f.at, f.kind) for f in pending])
    started = time.monotonic()
    info.kubectl("apply", "-f", "-", input=add_task_yaml(TASK, ips, info.proxy_nodes[1]))
    done: list[Fault] = []
    deadline = started + FORM.timeout_s
    while pending or not ready(info):
        assert time.monotonic() < deadline, (
            f"not ready after {FORM.timeout_s:.0f}s; faults fired {done}, pending {pending}; "
            f"joined {len(joined_machines(sb, ips))}/{len(ips)}"
        )
        count = len(joined_machines(sb, ips))
        if pending and count >= pending[0].at:
            fault = pending.pop(0)
            fault.joined_then, fault.fired_at = count, time.monotonic() - started
            fire(fault, faults, info)
            done.append(fault)
            print(f"{fault.fired_at:6.1f}s {fault.kind} at {count} joined")
            continue
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    task = wait_for(lambda: ready(info), "the task to be ready", 60)
    check_outcome(sb, info, task, ips, job_watch)
    installs = [len(successful_joins(sb, ip)) for ip in ips]
    print(
        f"chaos {FORM_NAME} seed {seed}: joined {task['status']['joined']}/"
        f"{task['status']['planned']} in {elapsed:.0f}s; Jobs at once (max) "
        f"{job_watch.max_at_once()}, Jobs {len(job_watch.added())}, watch gaps "
        f"{job_watch.gaps}; successful joins per machine min {min(installs)} max "
        f"{max(installs)}; faults {[(round(f.fired_at or 0), f.kind, f.joined_then) for f in done]}"
    )


def successful_joins(sb: Sandbox, ip: str) -> list[dict[str, Any]]:
    return [j for j in joins(sb.machine_dir(1, ip)) if j["event"] == "end" and j.get("rc") == 0]


def check_outcome(
    sb: Sandbox, info: SandboxCluster, task: dict[str, Any], ips: list[str], watch: JobWatch
) -> None:
    assert task["status"]["joined"] == task["status"]["planned"] == len(ips)
    label = task["metadata"]["labels"][NODE_LABEL]
    nodes = get(info, "nodes", "-l", f"{NODE_LABEL}={label}")["items"]
    assert sorted(
        a["address"] for n in nodes for a in n["status"]["addresses"] if a["type"] == "InternalIP"
    ) == sorted(ips)
    wait_for(lambda: not watch.live() or None, "the last Job to be removed", 120)
    watch.assert_sound()
    assert watch.max_at_once() == 1, watch.summary()
    twice = [ip for ip in ips if len(successful_joins(sb, ip)) != 1]
    assert not twice, "\n".join(
        [f"machines joined more than once: {twice}"]
        + [json.dumps(j) for ip in twice for j in joins(sb.machine_dir(1, ip))]
        + [line for ip in twice for line in job_log_lines(info, ip)]
    )
    for where, text in credential_leaks(sb, info):
        pytest.fail(f"a credential is in {where}: {text}")


def job_log_lines(info: SandboxCluster, ip: str) -> list[str]:
    """What the task's Job pods said about one machine (for a failure's message)."""
    out: list[str] = []
    for log in info.pod_logs(NS, f"{TASK}-job-*"):
        out += [f"{log.parent.name}: {x[:600]}" for x in log.read_text().splitlines() if ip in x]
    return out


def credentials(sb: Sandbox, info: SandboxCluster) -> dict[str, str]:
    """What must never show: the root password, the SSH private key's body, the
    bootstrap token (its secret half and the whole token)."""
    ssh = sb.status()["ssh"]
    password = Path(ssh["password_file"]).read_text().strip()
    key_lines = Path(ssh["private_key"]).read_text().splitlines()
    key_body = max(key_lines[1:-1], key=len)  # a full line of the key's base64
    # one bootstrap token per round of the task (k8s.builders.build_token_secret)
    tokens = get(
        info, "secret", "-n", "kube-system", "-l", "app.kubernetes.io/managed-by=penetrator"
    )
    found = {"password": password, "ssh key": key_body}
    for i, record in enumerate((tokens or {}).get("items", [])):
        data = {k: base64.b64decode(v).decode() for k, v in record["data"].items()}
        token_secret = data["token-secret"]
        found[f"bootstrap token secret {i}"] = token_secret
        found[f"bootstrap token {i}"] = f"{data['token-id']}.{token_secret}"
    assert any(k.startswith("bootstrap token") for k in found), "no bootstrap token of penetrator"
    return found


def _forms(value: str) -> list[str]:
    """The value, and its base64 as it would sit in a data field."""
    return [value, base64.b64encode(value.encode()).decode()]


def credential_leaks(sb: Sandbox, info: SandboxCluster) -> list[tuple[str, str]]:
    needles = {form: what for what, v in credentials(sb, info).items() for form in _forms(v)}
    found: list[tuple[str, str]] = []

    def scan(where: str, text: str) -> None:
        found.extend((where, what) for needle, what in needles.items() if needle in text)

    kinds = info.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    for kind in kinds:
        if kind == "secrets":
            continue  # where credentials belong
        scan(kind, info.kubectl("get", kind, "-A", "-o", "json", check=False).stdout)
    for path in log_files(sb, info):
        scan(str(path), path.read_text(errors="replace"))
    return found


def log_files(sb: Sandbox, info: SandboxCluster, check: bool = True) -> list[Path]:
    """Every log: the pods' (operator, Jobs), the control plane's, the sandbox's
    processes', and each machine's own."""
    roots: list[tuple[Path, str]] = [
        (cluster_dir(sb.name) / "controlplane", "*.log"),
        (state_dir(sb.name) / "logs", "*.log"),
        (state_dir(sb.name) / "machines", "*/*/edgeadm.log"),
    ]
    pods = info.pod_logs()
    assert not check or pods, "no pod log found"
    return pods + [p for root, pattern in roots for p in root.glob(pattern)]
