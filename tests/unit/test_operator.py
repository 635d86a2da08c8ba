"""operator: settings, claims between tasks, metrics, and the deploy/ manifests
(least-privilege RBAC without wildcards, the Deployment)."""

from __future__ import annotations

from typing import Any

import yaml
from prometheus_client import generate_latest

from penetrator.api import NodeTaskStatus
from penetrator.api.settings import load_settings
from penetrator.operator.metrics import Metrics
from penetrator.operator.runtime import _clean
from penetrator.plan.claims import older_claims, parse_tasks
from support import REPO

MANIFEST = REPO / "deploy" / "penetrator.yaml"


def docs(*kinds: str) -> list[dict[str, Any]]:
    """The objects of the one-file install (the rendered chart), of these kinds (all)."""
    found = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return [d for d in found if not kinds or d["kind"] in kinds]


# --- claims ---------------------------------------------------------------------------


def body(name: str, created: str, plan: dict[str, str], status: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeNamesOverride": plan, "sshCredential": "login"},
        "status": status or {},
    }


def active_claims(bodies: dict[str, Any], me: str) -> dict[str, str]:
    """What the operator's index gives a task's step (handlers._claims)."""
    tasks = parse_tasks(bodies)
    return older_claims(tasks.values(), tasks[me]) if me in tasks else {}


def test_older_active_task_holds_its_unfinished_machines() -> None:
    tasks = {
        "old": body("old", "2026-01-01T00:00:00Z", {"a": "10.0.0.1", "b": "10.0.0.2"}),
        "new": body("new", "2026-01-02T00:00:00Z", {"c": "10.0.0.1"}),
        "done": body(
            "done",
            "2025-01-01T00:00:00Z",
            {"d": "10.0.0.2"},
            {"nodetaskStatus": "ready", "nodeStatus": {}},
        ),
        "partial": body(
            "partial",
            "2025-06-01T00:00:00Z",
            {"e": "10.0.0.3", "f": "10.0.0.4"},
            {"nodetaskStatus": "creating", "nodeStatus": {"f": "10.0.0.4"}},
        ),
    }
    assert active_claims(tasks, "new") == {
        "10.0.0.1": "old",
        "10.0.0.2": "old",
        "10.0.0.4": "partial",
    }
    assert active_claims(tasks, "partial") == {}  # only "done" is older, and it is done
    assert active_claims(tasks, "missing") == {}


def test_same_creation_time_is_ordered_by_name() -> None:
    t = "2026-01-01T00:00:00Z"
    tasks = {"a": body("a", t, {"x": "10.0.0.1"}), "b": body("b", t, {"y": "10.0.0.1"})}
    assert active_claims(tasks, "b") == {"10.0.0.1": "a"}
    assert active_claims(tasks, "a") == {}


def test_clean_turns_views_into_dicts() -> None:
    from types import MappingProxyType

    b = MappingProxyType({"metadata": MappingProxyType({"name": "x"}), "spec": {"l": (1, 2)}})
    assert _clean(b) == {"metadata": {"name": "x"}, "spec": {"l": [1, 2]}}


# --- metrics ----------------------------------------------------------------------------


def test_metrics_by_state_and_phase() -> None:
    m = Metrics()
    m.task_status(
        "a",
        NodeTaskStatus.model_validate(
            {
                "nodetaskStatus": "creating",
                "planned": 5,
                "joined": 2,
                "failed": 1,
                "machines": {"x": {"phase": "installing"}, "y": {"phase": "failed"}},
            }
        ),
    )
    m.task_status(
        "b", NodeTaskStatus.model_validate({"nodetaskStatus": "ready", "planned": 1, "joined": 1})
    )
    text = generate_latest(m.registry).decode()
    assert 'penetrator_tasks{state="creating"} 1.0' in text
    assert 'penetrator_tasks{state="ready"} 1.0' in text
    assert 'penetrator_machines{phase="joined"} 3.0' in text
    assert 'penetrator_machines{phase="installing"} 1.0' in text
    assert 'penetrator_machines{phase="pending"} 1.0' in text
    m.task_status("b", None)
    assert 'penetrator_tasks{state="ready"} 0.0' in generate_latest(m.registry).decode()


# --- deploy/penetrator.yaml (the rendered chart) -------------------------------------


def test_no_wildcard_in_any_rbac_rule() -> None:
    rules = [
        (d["metadata"]["name"], r)
        for d in docs()
        if d["kind"] in ("Role", "ClusterRole")
        for r in d["rules"]
    ]
    assert rules
    for name, rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), (name, rule)
            assert all("*" not in str(v) for v in rule.get(key, [])), (name, rule)


def test_jobs_may_only_read_nodes() -> None:
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs()}
    cluster = by_name[("ClusterRole", "penetrator-job")]["rules"]
    assert cluster == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
    # no shared account of the Jobs: each task has its own (made by the operator)
    assert ("ServiceAccount", "penetrator-job") not in by_name
    binding = by_name[("ClusterRoleBinding", "penetrator-job")]
    assert binding["subjects"] == [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:serviceaccounts:edge-system",
        }
    ]
    # nothing else is granted to the namespace's accounts
    groups = [
        d for d in docs()
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s["name"] == "system:serviceaccounts:edge-system" for s in d["subjects"])
    ]  # fmt: skip
    assert [d["roleRef"]["name"] for d in groups] == ["penetrator-job"]


def test_operator_writes_nodes_and_approves_only_kubelet_client_csrs() -> None:
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs()}
    rules = by_name[("ClusterRole", "penetrator-operator")]["rules"]
    nodes = [r for r in rules if "nodes" in r["resources"]]
    assert nodes == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch", "delete"]}
    ]
    signers = [r for r in rules if "signers" in r["resources"]]
    assert signers == [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet"],
            "verbs": ["approve"],
        }
    ]
    secrets = [
        (d["metadata"]["namespace"], r["verbs"])
        for d in docs()
        if d["kind"] == "Role"
        for r in d["rules"]
        if "secrets" in r["resources"]
    ]
    assert ("kube-system", ["create"]) in secrets  # never read: tokens live there
    assert all("delete" not in verbs for _, verbs in secrets)


def test_bootstrap_tokens_may_create_csrs_but_are_never_auto_approved() -> None:
    bound = {
        d["roleRef"]["name"]
        for d in docs()
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in d["subjects"]
        if s["name"] == "system:bootstrappers:penetrator"
    }
    assert "system:node-bootstrapper" in bound
    assert not any("nodeclient" in r for r in bound)


def test_operator_deployment() -> None:
    (settings_cm,) = [
        d for d in docs("ConfigMap") if d["metadata"]["name"] == "penetrator-settings"
    ]
    (dep,) = docs("Deployment")
    assert dep["metadata"]["namespace"] == "edge-system"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "penetrator-operator"
    (c,) = pod["containers"]
    # the settings ConfigMap, mounted and passed by --config
    assert (settings_cm["kind"], settings_cm["metadata"]["name"]) == (
        "ConfigMap",
        "penetrator-settings",
    )
    assert settings_cm["metadata"]["namespace"] == "edge-system"
    (mount,) = c["volumeMounts"]
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == "penetrator-settings"
    assert (mount["name"], mount["readOnly"]) == (volume["name"], True)
    (key,) = settings_cm["data"]
    assert c["command"] == ["penetrator", "operator", "--config", f"{mount['mountPath']}/{key}"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(t["key"] == "node-role.kubernetes.io/control-plane" for t in pod["tolerations"])
    (ns,) = docs("Namespace")
    assert ns["metadata"]["name"] == "edge-system"
    env = {e["name"]: e.get("value") for e in c["env"]}
    settings = load_settings(yaml.safe_load(settings_cm["data"][key]), env)  # valid
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == settings.metrics_port
    assert settings.health_endpoint is not None
    assert settings.health_endpoint.endswith(f":{ports['health']}/healthz")
    assert ports["webhook"] == settings.webhook.port
    assert settings.webhook.enabled


def test_not_progressing_condition_replaces_progressing_and_keeps_its_time() -> None:
    from datetime import UTC, datetime, timedelta

    from penetrator.api import NodeTask
    from penetrator.operator.runtime import _not_progressing

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    task = NodeTask.from_dict(
        {
            "metadata": {"name": "t", "generation": 3},
            "spec": {"sshCredential": "login", "nodeNamesOverride": {"a": "10.0.0.1"}},
        }
    )
    st = NodeTaskStatus.model_validate({"nodetaskStatus": "creating"})
    first = _not_progressing(
        task, st, "CannotStart", "spec.sshCredential: Secret edge-system/login does not exist", t0
    )
    (cond,) = first.conditions
    assert (cond.type, cond.status, cond.reason) == ("Progressing", "False", "CannotStart")
    assert cond.observed_generation == 3
    later = task.model_copy(update={"status": first})
    again = _not_progressing(later, st, "ApiRefused", "other", t0 + timedelta(minutes=5))
    assert again.conditions[0].last_transition_time == t0
    assert again.conditions[0].reason == "ApiRefused"


# --- the apply side: what an action becomes (pure) -------------------------------------


def _prepared_task() -> Any:
    from penetrator.api import CONFIGMAP_NAME_ANNOTATION, JOB_NAME_ANNOTATION, NODE_LABEL, NodeTask

    return NodeTask.from_dict(
        {
            "metadata": {
                "name": "nodes",
                "uid": "u-1",
                "labels": {NODE_LABEL: "nodes-abc123"},
                "annotations": {
                    JOB_NAME_ANNOTATION: "nodes-job",
                    CONFIGMAP_NAME_ANNOTATION: "nodes-cm",
                },
            },
            "spec": {
                "sshCredential": "login",
                "proxyNode": "proxy-1",
                "nodeNamesOverride": {"edge-a": "10.0.0.1", "edge-b": "10.0.0.2"},
            },
        }
    )


def test_apply_configmap_becomes_the_job_config_of_exactly_its_machines() -> None:
    import json

    from penetrator.api.settings import Settings
    from penetrator.k8s.builders import ClusterInfo
    from penetrator.operator.runtime import job_configmap
    from penetrator.plan.reconcile import ApplyConfigMap

    cluster = ClusterInfo("https://10.0.0.254:6443", "sha256:" + "ab" * 32)
    js = Settings.model_validate({"job": {"packages": {"amd64": "/p.tgz"}}})
    cm = job_configmap(_prepared_task(), ApplyConfigMap({"edge-b": "10.0.0.2"}, 2), cluster, js)
    assert cm.metadata is not None
    assert cm.metadata.name == "nodetask-u-1"
    config = json.loads((cm.data or {})["config.json"])
    assert [(m["name"], m["ip"]) for m in config["machines"]] == [("edge-b", "10.0.0.2")]


def test_create_job_becomes_account_role_binding_then_job_of_its_round() -> None:
    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.core_v1 import ServiceAccount
    from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

    from penetrator.api.settings import Settings
    from penetrator.operator.runtime import job_objects
    from penetrator.plan.reconcile import CreateJob

    account, role, binding, job = job_objects(_prepared_task(), CreateJob(3), Settings())
    assert (type(account), type(role), type(binding), type(job)) == (
        ServiceAccount,
        Role,
        RoleBinding,
        Job,
    )
    assert job.spec is not None
    assert job.spec.template.spec is not None
    assert job.spec.template.spec.serviceAccountName == "nodetask-u-1"
    for obj in (account, role, binding, job):
        assert obj.metadata is not None
        assert obj.metadata.name == "nodetask-u-1"


def test_delete_job_deletes_the_job_foreground_then_its_rights() -> None:
    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
    from lightkube.types import CascadeType

    from penetrator.operator.runtime import job_deletions
    from penetrator.plan.reconcile import DeleteJob

    assert job_deletions(DeleteJob("nodes-job", "uid-1")) == (
        (Job, "nodes-job", CascadeType.FOREGROUND),
        (RoleBinding, "nodes-job", None),
        (Role, "nodes-job", None),
    )
