"""The node agent's reading of a pod spec (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from penetrator.api import API_VERSION, NodeTask
from penetrator.api.settings import Settings
from penetrator.k8s.builders import build_job
from penetrator_dev.sandbox.nodeagent.podspec import (
    DEFAULT_SECRET_MODE,
    EnvVar,
    UnsupportedPod,
    field_value,
    plan_pod,
)


def pod(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u-1",
            "labels": {"app": "web", "tier": "edge"},
        },
        "spec": {
            "nodeName": "proxy-1",
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": ["penetrator", "job"],
                    "args": ["--config", "/etc/c.json"],
                }
            ],
        },
    }
    base["spec"].update(spec)
    return base


def test_command_and_args_make_the_argv_and_the_image_is_ignored() -> None:
    plan = plan_pod(pod())
    assert plan.argv == ("penetrator", "job", "--config", "/etc/c.json")
    assert plan.restart_policy == "Always"
    assert plan.service_account == "default"
    assert plan.grace_period_seconds == 30


def test_a_container_without_command_is_refused_with_the_reason() -> None:
    p = pod(containers=[{"name": "c", "image": "nginx"}])
    with pytest.raises(UnsupportedPod, match="no command"):
        plan_pod(p)


def test_secret_volume_defaults_to_owner_only_unless_the_pod_chooses() -> None:
    api_default = plan_pod(
        pod(volumes=[{"name": "s", "secret": {"secretName": "x", "defaultMode": 0o644}}])
    )
    assert api_default.volumes[0].all_keys_of == (("secret", "x", DEFAULT_SECRET_MODE, False),)
    chosen = plan_pod(
        pod(volumes=[{"name": "s", "secret": {"secretName": "x", "defaultMode": 0o440}}])
    )
    assert chosen.volumes[0].all_keys_of[0][2] == 0o440


def test_items_of_a_configmap_become_files_with_their_modes() -> None:
    plan = plan_pod(
        pod(
            volumes=[
                {
                    "name": "c",
                    "configMap": {
                        "name": "cm",
                        "items": [{"key": "a", "path": "dir/a.json", "mode": 0o600}],
                    },
                }
            ]
        )
    )
    (f,) = plan.volumes[0].files
    assert (f.kind, f.name, f.key, f.path, f.mode) == ("configMap", "cm", "a", "dir/a.json", 0o600)


def test_the_default_service_account_volume_is_understood() -> None:
    projected = {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    plan = plan_pod(pod(volumes=[projected]))
    kinds = [(f.kind, f.path) for f in plan.volumes[0].files]
    assert kinds == [("token", "token"), ("configMap", "ca.crt"), ("field", "namespace")]
    assert plan.volumes[0].files[0].expiration_seconds == 3607


@pytest.mark.parametrize(
    "volume",
    [
        {"name": "n", "nfs": {"server": "s", "path": "/"}},
        {"name": "p", "persistentVolumeClaim": {"claimName": "c"}},
    ],
)
def test_unsupported_volumes_are_named(volume: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPod, match=f"volume {volume['name']!r}"):
        plan_pod(pod(volumes=[volume]))


def test_env_values_and_references() -> None:
    c = {
        "name": "m",
        "command": ["x"],
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {
                "name": "D",
                "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}},
            },
        ],
    }
    plan = plan_pod(pod(containers=[c]))
    assert plan.env == (
        EnvVar("A", value="1"),
        EnvVar("B", source=("field", "spec.nodeName")),
        EnvVar("C", source=("secret", "s", "k")),
        EnvVar("D", source=("configMap", "c", "k"), optional=True),
    )


def test_what_is_ignored_is_said() -> None:
    c = {"name": "m", "command": ["x"], "readinessProbe": {"httpGet": {"port": 8080}}}
    plan = plan_pod(pod(containers=[c, {"name": "sidecar", "command": ["y"]}]))
    assert "container readinessProbe" in plan.ignored
    assert any("containers after the first" in i for i in plan.ignored)


def test_deadline_and_grace_period() -> None:
    plan = plan_pod(
        pod(activeDeadlineSeconds=30, terminationGracePeriodSeconds=5, restartPolicy="Never")
    )
    assert (plan.active_deadline_seconds, plan.grace_period_seconds, plan.restart_policy) == (
        30,
        5,
        "Never",
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "ns"),
        ("spec.nodeName", "proxy-1"),
        ("status.podIP", "10.10.0.2"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels", 'app="web"\ntier="edge"'),
    ],
)
def test_downward_api_fields(path: str, value: str) -> None:
    assert field_value(pod(), path, "10.10.0.2") == value


def test_unknown_field_path_is_refused() -> None:
    with pytest.raises(UnsupportedPod, match=r"status\.phase"):
        field_value(pod(), "status.phase", "10.10.0.2")


def test_the_install_jobs_pod_is_run() -> None:
    """The Job's pod as penetrator builds it (security context, resources, affinity by
    name, a short-lived token, /tmp emptyDir, termination log) plans without error."""
    task = NodeTask.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "NodeTask",
            "metadata": {
                "name": "t",
                "uid": "u-1",
                "labels": {"app.superedge.io/node-label": "t-abc"},
                "annotations": {
                    "app.superedge.io/job-name": "t-job",
                    "app.superedge.io/configmap-name": "t-cm",
                },
            },
            "spec": {
                "sshCredential": "login",
                "proxyNode": "proxy-1",
                "nodeNamesOverride": {"edge-aaaaaa": "10.0.0.1"},
            },
        }
    )
    template = build_job(task, Settings()).spec.template.to_dict()
    template["metadata"].update(name="t-job-x", namespace="edge-system", uid="u-2")
    plan = plan_pod(template)
    kinds = {v.name: v.kind for v in plan.volumes}
    assert kinds == {
        "config": "configMap",
        "credentials": "secret",
        "api-access": "projected",
        "tmp": "emptyDir",
    }
    (token,) = [f for v in plan.volumes for f in v.files if f.kind == "token"]
    assert token.expiration_seconds == 3600 + 600
    # a host process shares the host's /tmp (where tests keep the packages)
    assert "/tmp" not in [m.mount_path for m in plan.mounts]
    assert "emptyDir 'tmp' over the host's /tmp" in plan.ignored
    assert "container securityContext" in plan.ignored


def test_host_path_volumes_and_the_termination_message() -> None:
    c = {
        "name": "main",
        "command": ["x"],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "pkgs", "mountPath": "/srv/pkgs", "readOnly": True}],
    }
    volume = {"name": "pkgs", "hostPath": {"path": "/var/lib/p", "type": "Directory"}}
    plan = plan_pod(pod(containers=[c], volumes=[volume]))
    (v,) = plan.volumes
    assert (v.kind, v.host_path, v.host_path_type) == ("hostPath", "/var/lib/p", "Directory")
    assert plan.termination_message_path == "/dev/termination-log"
    assert plan.termination_message_policy == "FallbackToLogsOnError"
    default = plan_pod(pod())
    assert (default.termination_message_path, default.termination_message_policy) == (
        "/dev/termination-log",
        "File",
    )
