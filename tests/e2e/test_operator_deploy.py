"""The operator deployed from deploy/penetrator.yaml (namespace, RBAC, Deployment) into the
sandbox: a real kubelet runs its pod (the image the repo built) on the control-plane
node with its own ServiceAccount (in-cluster config, least-privilege RBAC); a task
created with kubectl is installed through the proxy node and turns ready; then the
operator's Prometheus endpoint says so (tasks by state, machines by phase, rounds,
round duration, API errors) and the health endpoint the Deployment's probes use
answers 200, both reached at the pod's address from the control-plane node's
namespace. Also records what the two ServiceAccounts may do (`kubectl auth can-i
--list`), with no wildcard."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from penetrator.api import NODE_LABEL
from penetrator.k8s.userapi import await_admission, connect
from penetrator_dev.sandbox import cluster as cluster_mod
from penetrator_dev.sandbox.lifecycle import Sandbox
from support import Deployment, add_task_yaml, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.cluster]

NS = "edge-system"


DEPLOYMENT = Deployment(
    machines=2,
    settings={
        "reconcile": {
            "pollInterval": 2,
            "backoffBase": 2,
            "startTimeout": 60,  # a pod that never starts
        },
        "job": {"timeouts": {"waitReady": 120}},
    },
)


def get(info: Any, *args: str) -> Any:
    out = info.kubectl("get", *args, "-o", "json", check=False).stdout
    return json.loads(out) if out.strip() else None


def operator_pod(info: Any) -> Any:
    pods = get(info, "pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")
    running = [
        p for p in (pods or {}).get("items", [])
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip
    return running[0] if running else None


@pytest.fixture(scope="module")
def installed(deployed: tuple[Sandbox, Any]) -> dict[str, Any]:
    """The task "nodes" (every machine, through the proxy node), created with kubectl
    by the deployed operator's first test, once it is ready."""
    sb, info = deployed
    pod = wait_for(lambda: operator_pod(info), "the operator pod to run", 120)
    assert pod["spec"]["nodeName"] == info.control_plane_node
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    info.kubectl("apply", "-f", "-", input=add_task_yaml("nodes", ips, info.proxy_nodes[1]))

    def ready() -> Any:
        t = get(info, "nt", "nodes")
        return t if (t.get("status") or {}).get("nodetaskStatus") == "ready" else None

    try:
        return dict(wait_for(ready, "the task to be ready", 300))
    except AssertionError:
        p = operator_pod(info)
        log = info.pod_log(p["metadata"]["name"], NS) if p else None
        print(log.read_text()[-5000:] if log and log.exists() else "no operator log")
        print(json.dumps(get(info, "nt", "nodes"), indent=1)[-3000:])
        raise


def test_deployed_operator_installs_a_task(
    deployed: tuple[Sandbox, Any], installed: dict[str, Any]
) -> None:
    sb, info = deployed
    pod = operator_pod(info)
    assert pod["spec"]["nodeName"] == info.control_plane_node
    assert pod["spec"]["serviceAccountName"] == "penetrator-operator"
    ips = [m.ip for m in sb.topology.intranet(1).machines]
    label = installed["metadata"]["labels"][NODE_LABEL]
    nodes = get(info, "nodes", "-l", f"{NODE_LABEL}={label}")["items"]
    assert len(nodes) == len(ips)
    status_column = info.kubectl(
        "get", "nt", "nodes", "-o", "custom-columns=STATUS:status.nodetaskStatus"
    ).stdout
    assert status_column.split() == ["STATUS", "ready"]
    # the machines joined through CSRs the operator approved (its tasks' tokens are
    # not in kubeadm's auto-approved group), and the Job's account is the task's own
    approved = [
        c.get("reason")
        for csr in get(info, "csr")["items"]
        if "system:bootstrappers:penetrator" in csr["spec"].get("groups", [])
        for c in (csr.get("status") or {}).get("conditions", [])
        if c["type"] == "Approved"
    ]
    assert approved.count("PenetratorApproved") >= len(ips), approved
    assert "AutoApproved" not in approved
    # no Job needs the root login any more: the task's copy of it is gone
    cm = installed["metadata"]["annotations"]["app.superedge.io/configmap-name"]
    secret = get(info, "secret", "-n", NS, f"{cm}-credentials")
    assert "token" in secret["data"]
    assert not {"passwd", "sshkey"} & set(secret["data"])


def operator_address(sb: Sandbox) -> str | None:
    """Where the operator listens, seen from the cloud namespace: its pod's address."""
    info = cluster_mod.load_cluster(sb)
    if info is None:
        return None
    pod = operator_pod(info)
    return pod["status"].get("podIP") if pod else None


def scrape(sb: Sandbox, port: int, path: str) -> tuple[int, str]:
    """GET http://ADDRESS:PORT/PATH of the operator from inside the cloud namespace
    (the control-plane node's); (0, "") when no operator pod runs."""
    address = operator_address(sb)
    if address is None:
        return 0, ""
    p = sb.exec_in(
        "cloud",
        ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", f"http://{address}:{port}{path}"],
        check=False,
        timeout=30,
    )
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def test_metrics_and_health_endpoints(
    deployed: tuple[Sandbox, Any], installed: dict[str, Any]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sb, info = deployed
    pod = wait_for(lambda: operator_pod(info), "the operator pod to run", 60)
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics_port = int(ports["metrics"])  # the settings' metricsPort (the chart's)

    # the probes of the Deployment, exactly as they are written there
    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        port = http["port"] if isinstance(http["port"], int) else ports[http["port"]]
        code, body = scrape(sb, port, http["path"])
        assert code == 200, (probe, code, body)

    cm = installed["metadata"]["annotations"]["app.superedge.io/configmap-name"]
    results = get(info, "configmap", "-n", NS, f"{cm}-results")
    rounds = json.loads(results["data"]["results.json"])["round"]
    planned = installed["status"]["planned"]
    assert installed["status"]["joined"] == planned >= 1

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, text = scrape(sb, metrics_port, "/metrics")
        assert code == 200, (code, text[-500:])
        out = {}
        for family in text_string_to_metric_families(text):
            out[(family.name, ())] = -1.0  # the family is exposed
            for smp in family.samples:
                out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
        return out

    # the gauges follow the task's last step (at most a poll after it turned ready)
    def settled() -> Any:
        m = samples()
        return m if m.get(("penetrator_tasks", (("state", "ready"),))) == 1 else None

    m = wait_for(settled, "penetrator_tasks{state=ready} to be 1", 90)
    print("\n".join(f"{k} {v}" for k, v in sorted(m.items()) if v >= 0))
    assert m[("penetrator_tasks", (("state", "creating"),))] == 0
    assert m[("penetrator_tasks", (("state", "failed"),))] == 0
    assert m[("penetrator_machines", (("phase", "joined"),))] == planned
    for phase in ("pending", "failed"):
        assert m[("penetrator_machines", (("phase", phase),))] == 0, phase
    assert m[("penetrator_rounds_total", ())] == rounds >= 1
    assert m[("penetrator_rounds_finished_total", ())] == rounds
    assert m[("penetrator_round_duration_seconds_count", ())] == rounds
    assert m[("penetrator_round_duration_seconds_sum", ())] > 0
    assert ("penetrator_api_errors", ()) in m  # the family, labelled by operation
    errors = {k: v for k, v in m.items() if k[0] == "penetrator_api_errors_total"}
    print("api errors:", errors)
    assert m[("penetrator_leader", ())] == 1
    assert m[("penetrator_reconciles_total", ())] >= rounds


def test_a_refused_api_request_is_counted(
    deployed: tuple[Sandbox, Any], installed: dict[str, Any]
) -> None:
    """A ResourceQuota allowing no Job in edge-system makes the apiserver refuse the
    operator's Job (403, admission): penetrator_api_errors_total{operation=CreateJob}
    counts it."""
    sb, info = deployed
    container = operator_pod(info)["spec"]["containers"][0]
    port = int({p["name"]: p["containerPort"] for p in container["ports"]}["metrics"])

    def errors(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('penetrator_api_errors_total{operation="CreateJob"}')
        )

    before = errors(scrape(sb, port, "/metrics")[1])
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "e2e-no-jobs", "namespace": NS},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    task = add_task_yaml("no-job", ["10.10.9.9"], info.proxy_nodes[1])  # never installed
    try:
        info.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota))
        wait_for(
            lambda: (
                (get(info, "resourcequota", "-n", NS, "e2e-no-jobs") or {})
                .get("status", {})
                .get("hard")
            ),
            "the quota controller to count the namespace's Jobs",
            60,
        )
        info.kubectl("apply", "-f", "-", input=task)

        def counted() -> Any:
            text = scrape(sb, port, "/metrics")[1]
            return text if errors(text) > before else None

        text = wait_for(counted, "the refused Job to be counted", 90)
        print("\n".join(x for x in text.splitlines() if x.startswith("penetrator_api_errors")))
        assert get(info, "jobs", "-n", NS)["items"] == []
        # the task itself says so (not only the operator's log), and the failed step is
        # counted once, under the write that failed
        assert 'penetrator_api_errors_total{operation="reconcile"}' not in text

        def refused() -> Any:
            status = (get(info, "nt", "no-job") or {}).get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions", [])}
            p = conds.get("Progressing")
            return p if p and (p["status"], p["reason"]) == ("False", "ApiRefused") else None

        cond = wait_for(refused, "Progressing=False/ApiRefused on the task", 60)
        assert "CreateJob" in cond["message"]
        assert "403" in cond["message"]
        events = info.kubectl(
            "get", "events", "-n", NS, "--field-selector", "involvedObject.name=no-job",
            "-o", "jsonpath={.items[*].reason}",
        ).stdout.split()  # fmt: skip
        assert events.count("ApiRefused") == 1, events  # once per cause, not per retry
    finally:
        info.kubectl("delete", "nt", "no-job", "--ignore-not-found", "--wait=true", "--timeout=60s")
        info.kubectl("delete", "resourcequota", "-n", NS, "e2e-no-jobs", "--ignore-not-found")


# a task's Jobs run as the task's own account: any account of the namespace stands for it
@pytest.mark.parametrize("account", ["penetrator-operator", "a-tasks-job"])
def test_service_accounts_can_do_no_wildcard(deployed: tuple[Sandbox, Any], account: str) -> None:
    _, info = deployed
    for ns in (NS, "kube-system", "kube-public"):
        out = info.kubectl(
            "auth", "can-i", "--list", "-n", ns, f"--as=system:serviceaccount:{NS}:{account}"
        ).stdout
        print(f"--- {account} in {ns}\n{out}")
        for line in out.splitlines()[1:]:
            resource, *rest = line.split()
            verbs = line[line.rfind("[") :]
            assert resource != "*.*", line
            assert "[*]" not in verbs, line
            del rest


def test_bad_settings_stop_the_operator_with_the_field_named(deployed: tuple[Sandbox, Any]) -> None:
    """The settings ConfigMap gets a negative concurrency and an unknown distribution;
    after a restart the operator's pod logs both fields' paths, never starts (its
    health endpoint, the readiness probe's, never answers) and is not Ready. With the
    settings put back it serves again. Last in this module: it restarts the operator."""
    sb, info = deployed
    settings_cm = get(info, "configmap", "-n", NS, "penetrator-settings")
    good = settings_cm["data"]["settings.yaml"]
    bad = yaml.safe_load(good)
    bad["job"].update(concurrency=-1, distribution="ftp")
    container = operator_pod(info)["spec"]["containers"][0]
    health = int({p["name"]: p["containerPort"] for p in container["ports"]}["health"])

    def put(text: str) -> None:
        patch = json.dumps({"data": {"settings.yaml": text}})
        info.kubectl("-n", NS, "patch", "configmap", "penetrator-settings", "-p", patch)
        info.kubectl("-n", NS, "rollout", "restart", "deployment/penetrator-operator")

    def log_of(pod: dict[str, Any]) -> str:
        path = info.pod_log(pod["metadata"]["name"], NS)
        return path.read_text(errors="replace") if path and path.exists() else ""

    old = operator_pod(info)["metadata"]["name"]
    put(yaml.safe_dump(bad))
    try:

        def refused() -> Any:
            """A new pod that has crashed at least twice, logged the fields, not Ready."""
            for p in get(info, "pods", "-n", NS, "-l", "app.kubernetes.io/component=operator")[
                "items"
            ]:
                if p["metadata"]["name"] == old or p["metadata"].get("deletionTimestamp"):
                    continue
                statuses = p["status"].get("containerStatuses") or [{}]
                conds = {c["type"]: c["status"] for c in p["status"].get("conditions", [])}
                text = log_of(p)
                if (
                    statuses[0].get("restartCount", 0) >= 2
                    and conds.get("Ready") == "False"
                    and "job.distribution" in text
                ):
                    return p, text
            return None

        _, text = wait_for(refused, "the operator to refuse its settings", 180)
        print(text[-2000:])
        assert "invalid settings" in text
        assert "job.concurrency: Input should be greater than or equal to 1" in text
        assert "job.distribution: Input should be 'sftp' or 'http'" in text
        assert "started" not in text  # never got as far as the handlers' start-up
        code, _ = scrape(sb, health, "/healthz")
        assert code == 0  # nothing listens: the readiness probe fails
    finally:
        put(good)
    problem = await_admission(connect(info.kubeconfig), 180)
    assert problem is None, f"the operator does not serve again: {problem}"
    code, _ = scrape(sb, health, "/healthz")
    assert code == 200
