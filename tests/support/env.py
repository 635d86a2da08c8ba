"""Where things are: the repository, this virtualenv's commands, the tools tests run.
A tool that is missing fails the test that needs it (never a skip)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from penetrator_dev.sandbox.preflight import find_tool
from penetrator_dev.testenv.binaries import BinariesUnavailable, find_binaries

REPO = Path(__file__).resolve().parents[2]
"""The repository's root (tests/support/env.py is two levels below it)."""


def venv_bin() -> Path:
    """The bin/ of the virtualenv running the tests (penetrator, penetrator-dev, ...)."""
    return Path(sys.executable).parent


def require_tool(name: str) -> str:
    """The path of a tool on PATH or in an sbin directory; fails the test without it."""
    found = find_tool(name)
    if found is None:
        pytest.fail(f"{name} is not installed: this test needs it (scripts/setup.sh)")
    return found


def kubectl_binary() -> Path:
    """The Go-built kubectl (built by scripts/setup.sh); fails the test without it."""
    try:
        return find_binaries(build=False).kubectl
    except BinariesUnavailable as e:
        pytest.fail(f"the Go-built kubectl is unavailable: {e}")
