"""penetrator.job.entry: the job refuses to start with clear messages (exit 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from penetrator.job.entry import JobFiles, JobSetupError, load_config, run_from_files

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
