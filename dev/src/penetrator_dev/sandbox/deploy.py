"""Deploy penetrator into the sandbox's cluster as a user would, with
`kubectl apply -f deploy/penetrator.yaml` (the rendered chart), with only what the
sandbox must swap written into that file's settings ConfigMap (penetrator-settings):
the install package (the sandbox's edgeadm, built here) and where the apiserver is.

The one file rather than `helm template` with a sandbox values file: the sandbox then
installs exactly what users apply (tests/unit/test_chart.py keeps it equal to the
chart), and needs no helm at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from penetrator.k8s.userapi import await_admission, connect
from penetrator_dev.sandbox import realnode
from penetrator_dev.sandbox.cluster import SandboxCluster
from penetrator_dev.sandbox.join.package import build_join_packages
from penetrator_dev.sandbox.lifecycle import SandboxError
from penetrator_dev.sandbox.state import state_dir

NAMESPACE = "edge-system"
CRD = "crd/nodetasks.nodetask.apps.superedge.io"


def manifest_file() -> Path:
    """deploy/penetrator.yaml of the checkout this code runs from."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "deploy" / "penetrator.yaml").is_file():
            return parent / "deploy" / "penetrator.yaml"
    raise SandboxError("deploy/penetrator.yaml not found: the sandbox deploys from a checkout")


SETTINGS_CONFIGMAP = "penetrator-settings"
SETTINGS_KEY = "settings.yaml"


def sandbox_settings(name: str, info: SandboxCluster) -> dict[str, Any]:
    """The operator's settings that differ in the sandbox: where the machines reach
    the apiserver, and the install packages (the sandbox's edgeadm, built here). A
    Job's pod sees no host path: the packages come in an image, the project's plus a
    layer holding them, imported into every node."""
    built = build_join_packages(state_dir(name) / "packages")
    packages = {arch: p.path for arch, p in built.items()}
    archive = realnode.job_image(realnode.project_image(), packages)
    for node in [info.control_plane_node, *info.proxy_nodes.values()]:
        realnode.import_image(name, node, archive, realnode.JOB_IMAGE_BASE)
    image = f"{realnode.JOB_IMAGE_BASE.rsplit('/', 1)[1]}:{realnode.image_tag(archive)}"
    return {
        "apiServer": info.server,
        "jobPod": {"image": image, "imagePullPolicy": "IfNotPresent"},
        "job": {
            "packages": {
                arch: f"{realnode.PACKAGES_IN_IMAGE}/{p.name}" for arch, p in packages.items()
            },
            "workDir": "penetrator",
        },
    }


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, group by group (a value replaces a value)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# What an operator run outside the cluster (tests, benchmarks) needs of the file: no
# Deployment, and no webhook configurations (nothing would serve them).
FOUNDATION = (
    "CustomResourceDefinition", "Namespace", "ServiceAccount",
    "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
)  # fmt: skip


def foundation(kinds: tuple[str, ...] = FOUNDATION) -> str:
    """The objects of deploy/penetrator.yaml of these kinds, as one YAML stream for
    `kubectl apply -f -` (by default the CRD, namespace, ServiceAccounts and RBAC)."""
    docs = [d for d in yaml.safe_load_all(manifest_file().read_text()) if d]
    return yaml.safe_dump_all([d for d in docs if d["kind"] in kinds])


def manifests(changes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The objects of deploy/penetrator.yaml, in its order, with ``changes`` merged
    into the settings of its ConfigMap penetrator-settings. Not validated here: the
    operator does that at start-up (and says so in its log)."""
    docs = [d for d in yaml.safe_load_all(manifest_file().read_text()) if d]
    (configmap,) = [
        d for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SETTINGS_CONFIGMAP
    ]  # fmt: skip
    settings = merge(yaml.safe_load(configmap["data"][SETTINGS_KEY]), changes)
    configmap["data"][SETTINGS_KEY] = yaml.safe_dump(settings, sort_keys=False)
    return docs


def deploy_penetrator(
    name: str,
    info: SandboxCluster,
    settings: Mapping[str, Any] | None = None,
    timeout_s: float = 180.0,
) -> None:
    """Apply deploy/penetrator.yaml (CRD, namespace, RBAC, webhook and operator) with
    the sandbox's settings; wait until it serves. ``settings``: merged into the
    sandbox's settings in the ConfigMap penetrator-settings (e.g.
    ``{"reconcile": {"pollInterval": 2}}``)."""
    changes = merge(sandbox_settings(name, info), settings or {})
    # One apply in the file's order: the namespace before what lives in it, the
    # settings ConfigMap before the Deployment (its one pod is never replaced right
    # after it started).
    info.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests(changes)))
    info.kubectl("wait", "--for=condition=established", "--timeout=60s", CRD)
    problem = await_admission(connect(info.kubeconfig), timeout_s, interval=1)
    if problem is None:
        return
    raise SandboxError(
        f"the operator's webhook did not answer within {timeout_s:.0f}s ({problem}); its log "
        f"(`penetrator-dev sandbox logs --name {name} -n {NAMESPACE} <pod>`) ends:\n"
        + operator_log_tail(info)
    )


def operator_log_tail(info: SandboxCluster, lines: int = 20) -> str:
    """The last lines of the operator pods' logs (e.g. why its settings were refused)."""
    p = info.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator",
        "-o", "jsonpath={.items[*].metadata.name}", check=False,
    )  # fmt: skip
    tails = []
    for pod in p.stdout.split():
        log = info.pod_log(pod, NAMESPACE)
        if log is not None and log.exists():
            tails.append("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails) or "(no operator log)"
