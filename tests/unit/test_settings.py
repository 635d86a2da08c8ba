"""penetrator.api.settings: one typed, versioned tree; its defaults pinned, every bad
value refused at start-up with its field path, every field documented (README.md,
charts/penetrator/values.yaml) and in the ConfigMap of deploy/penetrator.yaml;
`penetrator operator` stops on bad settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from penetrator.api.jobconfig import InstallTemplate, JobConfig
from penetrator.api.settings import (
    ENV_OVERRIDES,
    Settings,
    SettingsError,
    load_settings,
)
from penetrator.cli.operator_cmd import OPTION_PATHS, operator, read_settings
from penetrator.k8s.builders import ClusterInfo, build_job_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "testdata" / "settings-defaults.yaml"


def leaf_paths(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every field's path in the document (camelCase), groups opened; the install
    template counts as one field."""
    out = []
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind is not InstallTemplate:
            out += leaf_paths(kind, path + ".")
        else:
            out.append(path)
    return out


def test_the_defaults_are_pinned() -> None:
    """The defaults are public interface: change them on purpose (regenerate the file
    from ``Settings().model_dump(mode="json", by_alias=True)``), never by accident."""
    assert Settings().model_dump(mode="json", by_alias=True) == yaml.safe_load(GOLDEN.read_text())
    assert load_settings(None) == load_settings({}) == Settings()
    assert load_settings(yaml.safe_load(GOLDEN.read_text())) == Settings()


def test_versioned_document() -> None:
    s = Settings()
    assert (s.api_version, s.kind) == ("penetrator.superedge.io/v1alpha1", "Settings")
    for doc, field in (({"apiVersion": "v1"}, "apiVersion"), ({"kind": "Config"}, "kind")):
        with pytest.raises(SettingsError, match=f"^invalid settings: {field}: "):
            load_settings(doc)


def test_document_then_environment_then_options() -> None:
    doc = {
        "identity": "from-file",
        "metricsPort": 9000,
        "reconcile": {"maxAttempts": 5, "pollInterval": 3},
        "jobPod": {"image": "file:1"},
        "job": {"concurrency": 10, "timeouts": {"waitReady": 30}},
    }
    env = {"PENETRATOR_IMAGE": "env:2", "PENETRATOR_METRICS_PORT": "", "HOSTNAME": "pod-1"}
    s = load_settings(doc, env, {("reconcile", "maxAttempts"): 7, ("identity",): None})
    assert s.identity == "from-file"  # $HOSTNAME only when nothing else says
    assert s.metrics_port == 9000  # an empty variable is ignored
    assert s.job_pod.image == "env:2"
    assert s.reconcile.max_attempts == 7
    assert s.reconcile.poll_interval == 3
    assert s.job.concurrency == 10
    assert s.job.timeouts.wait_ready == 30
    assert s.job.timeouts.connect == 20  # the rest of the group keeps its defaults
    assert doc["reconcile"] == {"maxAttempts": 5, "pollInterval": 3}  # the input is not changed
    assert load_settings({}, {"HOSTNAME": "pod-1"}).identity == "pod-1"
    assert load_settings({}, {"HOSTNAME": "p", "PENETRATOR_IDENTITY": "i"}).identity == "i"


def test_each_environment_override_and_option_names_a_field() -> None:
    fields = set(leaf_paths())
    for path in [*ENV_OVERRIDES.values(), *OPTION_PATHS.values()]:
        assert ".".join(path) in fields, path


BAD: list[tuple[dict[str, Any], str]] = [
    ({"job": {"concurrency": -1}}, "job.concurrency: Input should be greater than or equal to 1"),
    ({"job": {"distribution": "ftp"}}, "job.distribution: Input should be 'sftp' or 'http'"),
    ({"job": {"hostKeyPolicy": "trusting"}}, "job.hostKeyPolicy: "),
    ({"job": {"packages": {}}}, "job: the template uses {package_dir} but no packages"),
    ({"job": {"packages": {"mips": "/p"}}}, "job.packages: .*architecture 'mips'"),
    ({"job": {"workDir": "../etc"}}, "job.workDir: "),
    ({"job": {"sshUser": "Root;id"}}, "job.sshUser: "),
    ({"job": {"kubernetesVersion": "latest"}}, "job.kubernetesVersion: "),
    ({"job": {"transferConcurrency": 0}}, "job.transferConcurrency: "),
    ({"job": {"httpPort": 70000}}, "job.httpPort: "),
    ({"job": {"keepalive": -1}}, "job.keepalive: "),
    ({"job": {"timeouts": {"waitReady": 0}}}, "job.timeouts.waitReady: "),
    ({"job": {"retry": {"attempts": 0}}}, "job.retry.attempts: "),
    ({"job": {"template": {"join": []}}}, "job.template.join: "),
    ({"job": {"template": {"join": [["x", "{token}"]]}}}, "job.template: .*secret"),
    ({"job": {"machines": []}}, "job.machines: Extra inputs"),  # a task's fact, not a default
    ({"jobs": {}}, "jobs: Extra inputs are not permitted"),
    ({"reconcile": {"maxAttempt": 2}}, "reconcile.maxAttempt: Extra inputs"),
    ({"reconcile": {"max_attempts": 2}}, "reconcile.max_attempts: Extra inputs"),  # camelCase only
    ({"reconcile": 5}, "reconcile: "),
    ({"reconcile": {"maxAttempts": 0}}, "reconcile.maxAttempts: "),
    ({"reconcile": {"pollInterval": "soon"}}, "reconcile.pollInterval: "),
    ({"reconcile": {"backoffBase": -1}}, "reconcile.backoffBase: "),
    ({"reconcile": {"backoffMax": -1}}, "reconcile.backoffMax: "),
    ({"reconcile": {"startTimeout": 1}}, "reconcile.startTimeout: "),
    ({"reconcile": {"deletionPoll": 0}}, "reconcile.deletionPoll: "),
    ({"lease": {"durationSeconds": 0}}, "lease.durationSeconds: "),
    ({"lease": {"name": "Lease!"}}, "lease.name: "),
    ({"token": {"marginSeconds": 10}}, "token.marginSeconds: "),
    ({"token": {"ttlHours": 24}}, "token.ttlHours: "),
    ({"jobPod": {"image": ""}}, "jobPod.image: "),
    ({"jobPod": {"imagePullPolicy": "Sometimes"}}, "jobPod.imagePullPolicy: "),
    ({"jobPod": {"command": []}}, "jobPod.command: "),
    ({"jobPod": {"serviceAccount": "Job SA"}}, "jobPod.serviceAccount: "),
    ({"jobPod": {"deadlineSeconds": 10}}, "jobPod.deadlineSeconds: "),
    ({"jobPod": {"report": "sometimes"}}, "jobPod.report: "),
    ({"webhook": {"port": 0}}, "webhook.port: "),
    ({"webhook": {"enabled": "maybe"}}, "webhook.enabled: "),
    ({"webhook": {"service": "Web Hook"}}, "webhook.service: "),
    ({"webhook": {"tlsSecret": "a_b"}}, "webhook.tlsSecret: "),
    ({"webhook": {"configuration": "-x"}}, "webhook.configuration: "),
    ({"webhook": {"renewCheckSeconds": 0}}, "webhook.renewCheckSeconds: "),
    ({"webhook": {"nodeCheckSeconds": 10}}, "webhook.nodeCheckSeconds: "),
    ({"metricsPort": 70000}, "metricsPort: "),
    ({"healthEndpoint": "healthz"}, "healthEndpoint: "),
    ({"apiServer": "http://10.0.0.1:6443"}, "apiServer: .*not https://host:port"),
    ({"identity": "x" * 200}, "identity: "),
    ({"fieldManager": ""}, "fieldManager: "),
    ({"kubeconfig": 5}, "kubeconfig: "),
    ({"context": 5}, "context: "),
]


@pytest.mark.parametrize(("document", "needle"), BAD, ids=[n.split(":")[0] for _, n in BAD])
def test_a_bad_value_names_its_field(document: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingsError) as e:
        load_settings(document, source="settings.yaml")
    (problem,) = e.value.problems
    assert re.match(needle, problem), problem
    assert problem.endswith("(in settings.yaml)")


def test_bad_values_are_all_named_at_once() -> None:
    with pytest.raises(SettingsError) as e:
        load_settings({"job": {"concurrency": -1}, "webhook": {"port": 0}, "nope": 1})
    assert [p.split(":")[0] for p in e.value.problems] == [
        "job.concurrency",
        "webhook.port",
        "nope",
    ]


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError) as e:
        load_settings({}, {"PENETRATOR_METRICS_PORT": "eighty"})
    (problem,) = e.value.problems
    assert problem.startswith("metricsPort: ")
    assert problem.endswith("(from PENETRATOR_METRICS_PORT)")
    with pytest.raises(SettingsError, match=r"maxAttempts: .*\(from the command line\)"):
        load_settings({}, {}, {("reconcile", "maxAttempts"): 0})


def test_a_document_that_is_not_a_mapping() -> None:
    with pytest.raises(SettingsError, match="must be a mapping"):
        load_settings(["a"])  # type: ignore[arg-type]


def test_the_job_config_starts_from_the_job_settings() -> None:
    from penetrator.api import NodeTask

    task = NodeTask.from_dict(
        {
            "metadata": {
                "name": "t",
                "uid": "u-1",
                "labels": {"app.superedge.io/node-label": "t-abc123"},
                "annotations": {
                    "app.superedge.io/job-name": "t-job",
                    "app.superedge.io/configmap-name": "t-cm",
                },
            },
            "spec": {"sshCredential": "login", "nodeNamesOverride": {"a": "10.0.0.1"}},
        }
    )
    s = load_settings({"job": {"concurrency": 7, "distribution": "sftp"}})
    cluster = ClusterInfo("https://10.0.0.9:6443", "sha256:" + "0" * 64)
    cfg = build_job_config(task, {"a": "10.0.0.1"}, cluster, s.job)
    assert isinstance(cfg, JobConfig)
    assert (cfg.concurrency, cfg.distribution.value) == (7, "sftp")
    assert cfg.packages == s.job.packages
    assert cfg.namespace == "edge-system"  # where the job writes its results, from its config
    assert cfg.api_server == "10.0.0.9:6443"


# --- documented ------------------------------------------------------------------------


def test_every_field_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    missing = [p for p in leaf_paths() if f"`{p}`" not in section]
    assert not missing, f"README.md's Settings section lacks {missing}"
    for variable in ENV_OVERRIDES:
        assert variable in section


def _at(document: Any, path: str) -> Any:
    for key in path.split("."):
        document = document[key]
    return document


def test_every_field_is_in_the_deployed_configmap() -> None:
    manifest = REPO / "deploy" / "penetrator.yaml"  # the rendered chart
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    document = yaml.safe_load(cm["data"]["settings.yaml"])

    defaults = Settings().model_dump(by_alias=True, mode="json")

    def has(path: str, node: Any) -> bool:
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    # Helm drops null values, so those defaults are said in values.yaml only
    null = [p for p in leaf_paths() if has(p, defaults) and _at(defaults, p) is None]
    assert set(null) == {
        "kubeconfig",
        "context",
        "apiServer",
        "job.kubernetesVersion",
        "packages.image.reference",
    }
    missing = [
        p for p in leaf_paths() if not has(p, document) and p != "job.template" and p not in null
    ]
    assert not missing, f"deploy/penetrator.yaml's settings lack {missing}"
    assert load_settings(document).webhook.enabled  # the chart serves the webhook


def test_every_field_is_documented_in_the_chart_values() -> None:
    values = (REPO / "charts" / "penetrator" / "values.yaml").read_text()
    section = values.split("\nsettings:\n", 1)[1]
    # each field is a key (or, left at its default, a comment) with a comment beside
    # or above it; those the chart fills in are named in the comment above settings
    missing = [p for p in leaf_paths() if f"{p.rsplit('.', 1)[-1]}:" not in section]
    assert not missing, f"charts/penetrator/values.yaml's settings lack {missing}"
    assert "# template:" in section


# --- penetrator operator -------------------------------------------------------------------


def test_operator_stops_on_bad_settings_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "apiVersion: penetrator.superedge.io/v1alpha1\nkind: Settings\n"
        "job: {concurrency: -1, distribution: ftp}\n"
    )
    result = CliRunner().invoke(operator, ["--config", str(config)])
    assert result.exit_code == 2
    assert "job.concurrency: Input should be greater than or equal to 1" in result.output
    assert "job.distribution: Input should be 'sftp' or 'http'" in result.output
    assert str(config) in result.output


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "cannot read"), ("job: [", "not YAML"), ("- a\n", "must be a mapping")],
)
def test_operator_stops_on_an_unreadable_settings_file(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    config = tmp_path / "settings.yaml"
    if content is not None:
        config.write_text(content)
    result = CliRunner().invoke(operator, ["--config", str(config)])
    assert result.exit_code == 2
    assert needle in result.output


def test_read_settings_gives_every_replica_an_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOSTNAME", raising=False)
    monkeypatch.delenv("PENETRATOR_IDENTITY", raising=False)
    config = tmp_path / "settings.yaml"
    config.write_text("reconcile: {maxAttempts: 4}\n")
    s = read_settings(config, {"max_attempts": None, "poll_interval": 1.5})
    assert s.identity.startswith("pid-")
    assert (s.reconcile.max_attempts, s.reconcile.poll_interval) == (4, 1.5)
    assert read_settings(None, {}).reconcile == Settings().reconcile
