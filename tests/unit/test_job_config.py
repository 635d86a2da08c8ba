"""penetrator.api.jobconfig: hostile values are refused before anything runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from penetrator.api.jobconfig import (
    HostKeyPolicy,
    InstallTemplate,
    JobConfig,
    check_api_server,
    edgeadm_template,
)

HASH = "sha256:" + "0" * 64


def config(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "machines": [{"name": "edge-a", "ip": "10.10.1.1"}],
        "taskLabel": "nodes-abc123",
        "apiServer": "172.31.0.1:6443",
        "caCertHash": HASH,
        "packages": {"amd64": "/pkg/amd64.tgz"},
    }
    base.update(kw)
    return base


def test_defaults() -> None:
    cfg = JobConfig.model_validate(config())
    assert cfg.ssh_port == 22
    assert cfg.ssh_user == "root"
    assert cfg.host_key_policy is HostKeyPolicy.TOFU
    assert cfg.concurrency == 1000
    assert cfg.transfer_concurrency == 50
    assert cfg.template == edgeadm_template()
    assert cfg.work_dir == "/var/lib/penetrator"


def test_from_plan_and_canonical_ip() -> None:
    cfg = JobConfig.from_plan(
        {"a": "fd00:0::1"},
        taskLabel="t",
        apiServer="[fd00::9]:6443",
        caCertHash=HASH,
        packages={"amd64": "/p"},
    )
    assert cfg.machines[0].ip == "fd00::1"


HOSTILE_NAMES = [
    "edge;rm -rf /",
    "edge$(id)",
    "edge`id`",
    "Edge",
    "edge a",
    "-edge",
    "edge\n",
    "a" * 64,
    "",
    "edge'x",
    'edge"x',
    "edge|x",
    "edge&x",
    "edge>x",
]
HOSTILE_IPS = [
    "10.0.0.1;id",
    "10.0.0.1 ",
    "$(id)",
    "10.0.0.256",
    "010.0.0.1",
    "1" * 100,
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "10.0.0.1\n",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_node_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="machines"):
        JobConfig.model_validate(config(machines=[{"name": name, "ip": "10.0.0.1"}]))


@pytest.mark.parametrize("ip", HOSTILE_IPS)
def test_hostile_ips_are_refused(ip: str) -> None:
    with pytest.raises(ValidationError, match="machines"):
        JobConfig.model_validate(config(machines=[{"name": "a", "ip": ip}]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("taskLabel", "x;id"),
        ("taskLabel", "a" * 64),
        ("taskLabel", ""),
        ("apiServer", "1.2.3.4"),
        ("apiServer", "1.2.3.4:99999"),
        ("apiServer", "h$(id):6443"),
        ("apiServer", "a b:6443"),
        ("caCertHash", "sha256:" + "0" * 63),
        ("caCertHash", "sha256:" + "0" * 64 + ";id"),
        ("kubernetesVersion", "v1.2.3;id"),
        ("workDir", "/var/lib/x y"),
        ("workDir", "/var/lib/../etc"),
        ("workDir", "-rf"),
        ("workDir", "/tmp/$(id)"),
        ("workDir", "/" + "a" * 300),
        ("sshUser", "root;id"),
        ("sshPort", 0),
        ("concurrency", 0),
        ("packages", {"mips": "/x"}),
        ("hostKeyPolicy", "yolo"),
        ("unknownField", 1),
    ],
)
def test_hostile_or_wrong_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        JobConfig.model_validate(config(**{field: value}))


def test_duplicates_are_refused() -> None:
    two = [{"name": "a", "ip": "10.0.0.1"}, {"name": "a", "ip": "10.0.0.2"}]
    with pytest.raises(ValidationError, match="planned twice"):
        JobConfig.model_validate(config(machines=two))
    two = [{"name": "a", "ip": "10.0.0.1"}, {"name": "b", "ip": "10.0.0.1"}]
    with pytest.raises(ValidationError, match="planned twice"):
        JobConfig.model_validate(config(machines=two))


def test_package_dir_needs_packages() -> None:
    with pytest.raises(ValidationError, match="no packages"):
        JobConfig.model_validate(config(packages={}))


def test_template_never_takes_the_token_in_a_command() -> None:
    with pytest.raises(ValidationError, match="secret"):
        InstallTemplate(join=[["kubeadm", "join", "--token", "{token}"]])
    with pytest.raises(ValidationError, match="secret"):
        InstallTemplate(join=[["sh", "-c", "echo x{token}x"]])
    InstallTemplate(
        join=[["kubeadm", "join", "--config", "{cfg}"]], files={"cfg": {"t": "{token}"}}
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"join": [["x", "{nope}"]]},
        {"join": []},
        {"join": [[]]},
        {"join": [["x"]], "variables": {"v": "a b"}},
        {"join": [["x"]], "variables": {"v": "$(id)"}},
        {"join": [["x"]], "variables": {"v": "a;b"}},
        {"join": [["x"]], "variables": {"node_name": "x"}},
        {"join": [["x"]], "variables": {"Bad-Name": "x"}},
        {"join": [["x"]], "files": {"../etc": {}}},
        {"join": [["x"]], "files": {"f": "{g}"}, "variables": {}},
        {"join": [["x\n"]]},
    ],
)
def test_bad_templates_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InstallTemplate(**kw)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("172.31.0.1:6443", True),
        ("[fd00::1]:6443", True),
        ("api.example.com:443", True),
        ("api.example.com", False),
        ("[fd00::1]", False),
        ("api..x:1", False),
        ("1.2.3.4:0", False),
    ],
)
def test_api_server(value: str, ok: bool) -> None:
    assert (check_api_server(value) is None) is ok
