"""The Helm chart (charts/penetrator): `helm lint` passes, and deploy/penetrator.yaml is
exactly its rendering (scripts/render-manifests.sh), so the one-file install is
current (the CI check). Helm is the pinned build of testenv/helm; without it the
test fails (scripts/setup.sh builds it)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "penetrator"


@pytest.fixture(scope="module")
def helm() -> Path:
    p = subprocess.run(
        [str(REPO / "testenv" / "helm" / "build.sh"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert p.returncode == 0, f"helm is not built (run scripts/setup.sh): {p.stderr}"
    return Path(p.stdout.strip()) / "helm"


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    p = subprocess.run(
        [str(helm), "template", "penetrator", str(CHART), "-n", "edge-system", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def test_lint_passes(helm: Path) -> None:
    p = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_one_file_install_is_the_rendered_chart(helm: Path) -> None:
    p = subprocess.run(
        [str(REPO / "scripts" / "render-manifests.sh"), "-"],
        capture_output=True, env={**os.environ, "HELM": str(helm)}, check=True,
    )  # fmt: skip
    assert p.stdout == (REPO / "deploy" / "penetrator.yaml").read_bytes(), (
        "deploy/penetrator.yaml is not current: run scripts/render-manifests.sh"
    )


def test_webhook_off_leaves_out_its_configuration_service_and_rbac(helm: Path) -> None:
    on = {(d["kind"], d["metadata"]["name"]) for d in render(helm)}
    off_docs = render(helm, "--set", "webhook.enabled=false")
    off = {(d["kind"], d["metadata"]["name"]) for d in off_docs}
    assert on - off == {
        ("Service", "penetrator-webhook"),
        ("MutatingWebhookConfiguration", "penetrator.nodetask.apps.superedge.io"),
        ("ValidatingWebhookConfiguration", "penetrator.nodetask.apps.superedge.io"),
        ("ClusterRole", "penetrator-operator-webhook"),
        ("ClusterRoleBinding", "penetrator-operator-webhook"),
    }
    (cm,) = [d for d in off_docs if d["kind"] == "ConfigMap"]
    assert yaml.safe_load(cm["data"]["settings.yaml"])["webhook"]["enabled"] is False
    (dep,) = [d for d in off_docs if d["kind"] == "Deployment"]
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert "webhook" not in {p["name"] for p in ports}


def test_values_reach_the_objects(helm: Path) -> None:
    docs = render(
        helm,
        "--set", "image.repository=registry.example/penetrator", "--set", "image.tag=9.9.9",
        "--set", "replicas=2",
        "--set", "nodeSelector.zone=a", "--set", "settings.reconcile.maxAttempts=5",
        "--set", "rbac.create=false", "--set", "serviceAccount.create=false",
    )  # fmt: skip
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ServiceAccount", "Role", "RoleBinding", "ClusterRoleBinding"}
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2
    assert pod["nodeSelector"] == {"zone": "a"}
    assert pod["containers"][0]["image"] == "registry.example/penetrator:9.9.9"
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    settings = yaml.safe_load(cm["data"]["settings.yaml"])
    assert settings["reconcile"]["maxAttempts"] == 5
    # the Job runs the operator's image (one home); its account is the task's own
    assert settings["jobPod"]["image"] == "registry.example/penetrator:9.9.9"
    assert "serviceAccount" not in settings["jobPod"]


def test_default_image_is_the_chart_app_version(helm: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]  # scripts/image.sh's tag
    (dep,) = [d for d in render(helm) if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"penetrator:{chart['appVersion']}"
    assert c["imagePullPolicy"] == "IfNotPresent"


def _policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (vap,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    return vap


def test_the_admission_policy_checks_the_authors_rights_webhook_or_not(helm: Path) -> None:
    """The checks that must hold without the webhook live in the API server: the
    author's get on the credential Secret and delete on each named Node (CEL
    authorizer), the set-once metadata written after create only by the operator."""
    vap = _policy(render(helm))
    assert vap["spec"]["failurePolicy"] == "Fail"
    rules = [v["expression"] for v in vap["spec"]["validations"]]
    text = " ".join(rules)
    assert ".resource('secrets')" in text
    assert ".name(object.spec.sshCredential)" in text
    per_name = [r for r in rules if ".name(variables.names[" in r]
    assert len(per_name) == 4  # admissionPolicy.namedNodes
    operator = "system:serviceaccount:edge-system:penetrator-operator"
    variables = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}
    assert operator in variables["operator"]
    for key in ("app.superedge.io/node-label", "app.superedge.io/job-name",
                "app.superedge.io/configmap-name"):  # fmt: skip
        assert sum(key in r for r in rules) >= 2, key  # set once; after create, operator only
    off = _policy(render(helm, "--set", "webhook.enabled=false"))
    extra = len(off["spec"]["validations"]) - len(vap["spec"]["validations"])
    assert extra == 2  # no nodeNamesGenerated mark and no label on a new task
    docs = render(helm, "--set", "admissionPolicy.enabled=false")
    assert not [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]


def test_the_user_role_is_shipped_and_grants_no_secret_reads(helm: Path) -> None:
    docs = render(helm)
    (cr,) = [
        d for d in docs if (d["kind"], d["metadata"]["name"]) == ("ClusterRole", "penetrator-user")
    ]
    (role,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Role", "penetrator-user")]
    assert cr["rules"] == [
        {
            "apiGroups": ["nodetask.apps.superedge.io"],
            "resources": ["nodetasks"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
    ]
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert [r["verbs"] for r in secrets] == [["create"]]
