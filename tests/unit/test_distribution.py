"""The product's wheel and command hold none of the development tools."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from penetrator.cli.main import cli
from support import REPO


def test_the_penetrator_wheel_holds_no_dev_module(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("penetrator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert "penetrator/operator/handlers.py" in modules
    assert "penetrator/job/runner.py" in modules
    dev = [n for n in names if "sandbox" in n or "testenv" in n or "penetrator_dev" in n]
    assert dev == []


def test_penetrator_help_shows_only_user_operator_and_job_commands() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    commands = out.split("Commands:")[1].split()
    listed = {w for w in commands if w.isalpha() and w.islower()}
    assert {"add", "reinstall", "status", "watch", "credential", "operator", "job"} <= listed
    assert "sandbox" not in out
    assert "testenv" not in out
