"""penetrator.job.entry: the job refuses to start with clear messages (exit 2)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from penetrator.cli.main import cli
from penetrator.job.entry import (
    JobFiles,
    JobSetupError,
    load_config,
    run,
    run_from_files,
    write_termination_message,
)

TOKEN = "abcdef.0123456789abcdef"
GOOD = {
    "machines": [{"name": "edge-a", "ip": "10.10.1.1"}],
    "taskLabel": "t-1",
    "apiServer": "10.0.0.1:6443",
    "caCertHash": "sha256:" + "0" * 64,
    "template": {"join": [["true"]]},
}


def test_load_config_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "machines": [{"name": "a;b", "ip": "10.0.0.1"}]}))
    with pytest.raises(JobSetupError, match=r"machines\.0\.name"):
        load_config(p)
    p.write_text("machines: [")
    with pytest.raises(JobSetupError, match="not YAML"):
        load_config(p)
    with pytest.raises(JobSetupError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    p.write_text(yaml.safe_dump(GOOD))
    assert load_config(p).machines[0].name == "edge-a"


def test_bad_credentials_and_missing_packages_stop_before_any_connection(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "passwd").write_text("hunter22")
    with pytest.raises(JobSetupError, match="token") as e:
        asyncio.run(run_from_files(JobFiles(p, creds, use_cluster=False)))
    assert "hunter22" not in str(e.value)
    (creds / "token").write_text(TOKEN)
    p.write_text(yaml.safe_dump({**GOOD, "packages": {"amd64": str(tmp_path / "nope.tgz")}}))
    with pytest.raises(JobSetupError, match="package for amd64 not found"):
        asyncio.run(run_from_files(JobFiles(p, creds, use_cluster=False)))


def test_a_setup_error_lands_in_the_termination_log_as_one_line(tmp_path: Path) -> None:
    """The pod's terminationMessagePath is where the operator reads why the job stopped."""
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "packages": {"amd64": str(tmp_path / "nope.tgz")}}))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "passwd").write_text("hunter22")
    (creds / "token").write_text(TOKEN)
    log = tmp_path / "termination-log"
    log.write_text("")  # the kubelet provides the file
    with pytest.raises(JobSetupError):
        run(JobFiles(p, creds, use_cluster=False, termination_log=log))
    text = log.read_text()
    assert text == f"PackageNotFound: package for amd64 not found: {tmp_path / 'nope.tgz'}\n"
    for secret in ("hunter22", TOKEN, TOKEN.split(".")[1]):
        assert secret not in text


def test_the_cli_writes_the_reason_and_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sshkey").write_text("not a key\nsecret-ish line\n")
    (creds / "token").write_text(TOKEN)
    log = tmp_path / "termination-log"
    log.write_text("stale\n")
    argv = ["job", "--config", str(p), "--credentials", str(creds), "--no-cluster"]
    result = CliRunner().invoke(cli, [*argv, "--termination-log", str(log)])
    assert result.exit_code == 2
    assert (
        log.read_text()
        == f"CredentialUnreadable: {creds / 'sshkey'} is not an unencrypted private key "
        "(OpenSSH or PEM)\n"
    )


def test_unreachable_api_is_a_setup_error(tmp_path: Path) -> None:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "packages": {}}))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "passwd").write_text("hunter22")
    (creds / "token").write_text(TOKEN)
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "x"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )
        log = tmp_path / "termination-log"
        log.write_text("")
        files = JobFiles(p, creds, kubeconfig=kubeconfig, report_configmap="r", termination_log=log)
        with pytest.raises(JobSetupError, match="cannot reach the API server"):
            run(files)
    assert log.read_text().startswith("ClusterUnreachable: cannot reach the API server: ")


def test_no_termination_log_file_is_created(tmp_path: Path) -> None:
    """Outside a pod (a host process, maybe as root) nothing appears in /dev."""
    missing = tmp_path / "termination-log"
    assert not write_termination_message(missing, "why")
    assert not missing.exists()
    missing.write_text("")
    assert write_termination_message(missing, "a\nmulti-line\treason " + "x" * 5000)
    text = missing.read_text()
    assert text.startswith("a multi-line reason x")
    assert text.count("\n") == 1
    assert len(text.encode()) <= 1025
