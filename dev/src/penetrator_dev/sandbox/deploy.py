"""Deploy penetrator from `deploy/` into the sandbox's cluster, as a user would
with `kubectl apply -f deploy/`, with only what the sandbox must swap: the
install package (the sandbox's edgeadm, built here) and where the apiserver is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from penetrator_dev.sandbox.cluster import SandboxCluster
from penetrator_dev.sandbox.join.package import build_join_packages
from penetrator_dev.sandbox.lifecycle import SandboxError
from penetrator_dev.sandbox.state import state_dir

NAMESPACE = "edge-system"
CRD = "crd/nodetasks.nodetask.apps.superedge.io"
# Applied in this order; operator.yaml last, with the sandbox's settings in place
# (one pod, never replaced right after it started).
MANIFESTS = ("namespace.yaml", "rbac.yaml", "rbac-webhook.yaml", "webhook.yaml")


def deploy_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "deploy" / "crd.yaml").is_file():
            return parent / "deploy"
    raise SandboxError("deploy/crd.yaml not found: the sandbox deploys from a checkout")


def sandbox_settings(
    name: str, info: SandboxCluster, job_defaults: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The operator's settings that differ in the sandbox (PENETRATOR_* variables)."""
    packages = build_join_packages(state_dir(name) / "packages")
    defaults = {
        "packages": {arch: str(p.path) for arch, p in packages.items()},
        "workDir": "penetrator",
        **(job_defaults or {}),
    }
    return {
        "PENETRATOR_JOB_CONFIG_DEFAULTS": json.dumps(defaults),
        "PENETRATOR_API_SERVER": info.server,
    }


def operator_deployment(settings: Mapping[str, str]) -> dict[str, Any]:
    deployment: dict[str, Any] = yaml.safe_load((deploy_dir() / "operator.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container.get("env", []) if e["name"] not in settings] + [
        {"name": k, "value": v} for k, v in settings.items()
    ]
    return deployment


def webhook_answers(info: SandboxCluster) -> bool:
    """A server-side dry run of a task reaches the webhook: it mutates it, or refuses
    it by name (its credential Secret does not exist). Until the webhook serves,
    failurePolicy Fail refuses every create with "failed calling webhook"."""
    probe = {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {"name": "deploy-probe"},
        "spec": {
            "nodeNamePrefix": "probe",
            "targetMachines": ["10.254.9.9"],
            "sshCredential": "deploy-probe",
        },
    }
    p = info.kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(probe),
        check=False,
    )
    if p.returncode == 0:
        return "nodeNamesOverride" in p.stdout
    return "denied the request" in p.stderr and "spec.sshCredential" in p.stderr


def deploy_penetrator(
    name: str,
    info: SandboxCluster,
    extra_settings: Mapping[str, str] | None = None,
    job_defaults: Mapping[str, Any] | None = None,
    timeout_s: float = 180.0,
) -> None:
    """Apply the CRD, namespace, RBAC, webhook and operator; wait until it serves.
    ``extra_settings``: more PENETRATOR_* variables; ``job_defaults``: merged into
    the job config defaults (e.g. shorter timeouts for tests)."""
    d = deploy_dir()
    info.kubectl("apply", "-f", str(d / "crd.yaml"))
    info.kubectl("wait", "--for=condition=established", "--timeout=60s", CRD)
    for manifest in MANIFESTS:
        info.kubectl("apply", "-f", str(d / manifest))
    settings = {**sandbox_settings(name, info, job_defaults), **(extra_settings or {})}
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump(operator_deployment(settings)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if webhook_answers(info):
            return
        time.sleep(1)
    raise SandboxError(
        f"the operator's webhook did not answer within {timeout_s:.0f}s; see "
        f"`penetrator-dev sandbox logs --name {name} <operator pod>`"
    )
