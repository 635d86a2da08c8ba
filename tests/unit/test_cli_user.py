"""The user CLI's arguments, client-side checks and exit codes (no cluster needed:
every case here ends before a request)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from penetrator.cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_add_dry_run_prints_the_task() -> None:
    code, out, _ = run(
        "add", "10.0.0.1", "10.0.0.2", "--prefix", "edge", "--proxy-node", "proxy-1",
        "--credential", "login", "--ssh-port", "2222", "--dry-run",
    )  # fmt: skip
    assert code == 0
    task = yaml.safe_load(out)
    assert task["apiVersion"] == "nodetask.apps.superedge.io/v1beta1"
    assert task["metadata"] == {"generateName": "edge-"}
    assert task["spec"] == {
        "nodeNamePrefix": "edge",
        "targetMachines": ["10.0.0.1", "10.0.0.2"],
        "sshCredential": "login",
        "proxyNode": "proxy-1",
        "sshPort": 2222,
    }


def test_add_without_prefix_uses_edge() -> None:
    code, out, _ = run("add", "10.0.0.1", "--credential", "login", "--dry-run")
    assert code == 0
    task = yaml.safe_load(out)
    assert task["metadata"] == {"generateName": "edge-"}
    assert task["spec"]["nodeNamePrefix"] == "edge"


def test_join_template_goes_into_the_spec() -> None:
    code, out, _ = run(
        "reinstall", "edge-1=10.0.0.1", "--credential", "login", "--join-template", "kubeadm",
        "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert yaml.safe_load(out)["spec"]["joinTemplate"] == "kubeadm"
    code, _, err = run("add", "10.0.0.1", "--credential", "c", "--join-template", "ansible")
    assert code == 2
    assert "edgeadm" in err


def test_add_from_file_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "ips"
    f.write_text("# rack 1\n10.0.0.1, 10.0.0.2\n\n10.0.0.3  # spare\n")
    code, out, _ = run(
        "add", "--from-file", str(f), "--prefix", "e", "--credential", "c", "--name", "t",
        "--dry-run", "-o", "json",
    )  # fmt: skip
    assert code == 0
    task = json.loads(out)
    assert task["metadata"] == {"name": "t"}
    assert task["spec"]["targetMachines"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert "proxyNode" not in task["spec"]


def test_reinstall_dry_run() -> None:
    code, out, _ = run("reinstall", "a=10.0.0.1", "b=fd00::1", "--credential", "c", "--dry-run")
    assert code == 0
    task = yaml.safe_load(out)
    assert task["metadata"] == {"generateName": "reinstall-"}
    assert task["spec"]["nodeNamesOverride"] == {"a": "10.0.0.1", "b": "fd00::1"}


def test_bad_arguments_exit_2_with_one_line() -> None:
    cases = [
        (("add", "--prefix", "e", "--credential", "c"), "give the machines' IP addresses"),
        (("add", "10.0.0.300", "--prefix", "e", "--credential", "c"), "spec.targetMachines: [0]"),
        (("add", "10.0.0.1", "--prefix", "E", "--credential", "c"), "spec.nodeNamePrefix"),
        (("reinstall", "a", "--credential", "c"), "write NAME=IP"),
        (("reinstall", "a=1.1.1.1", "a=1.1.1.2", "--credential", "c"), "given twice"),
        (("reinstall", "a=1.1.1.1", "b=1.1.1.1", "--credential", "c"), "given to both"),
        (
            ("add", "10.0.0.1", "--prefix", "e", "--credential", "c", "--from-file", "/nope"),
            "/nope",
        ),
    ]
    for args, text in cases:
        code, _, err = run(*args)
        assert code == 2, args
        assert text in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_credential_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o644)
    code, _, err = run("credential", "create", "k", "--key-file", str(key))
    assert code == 2
    assert "readable by others (mode 0644)" in err
    assert "chmod 600" in err
    key.chmod(0o640)
    assert run("credential", "create", "k", "--key-file", str(key))[0] == 2
    not_key = tmp_path / "notkey"
    not_key.write_text("hello")
    not_key.chmod(0o600)
    code, _, err = run("credential", "create", "k", "--key-file", str(not_key))
    assert code == 2
    assert "does not look like a private key" in err


def test_credential_needs_exactly_one_source(tmp_path: Path) -> None:
    assert run("credential", "create", "k")[0] == 2
    pw = tmp_path / "pw"
    pw.write_text("\n")
    code, _, err = run("credential", "create", "k", "--password-file", str(pw))
    assert code == 2
    assert "is empty" in err


def test_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    code, _, err = run("status", "x", "--kubeconfig", str(tmp_path / "none"))
    assert code == 1
    assert err.startswith("error: cannot load kubeconfig")
    assert "Traceback" not in err
