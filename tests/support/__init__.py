"""Helpers shared by the tests (unit and e2e): bounded waiting, NodeTask manifests,
where things are (repository, virtualenv, tools), a free loopback port.

Importable as `support` because pyproject's pytest settings put tests/ on the path
(`pythonpath`); type-checked with the product (mypy `files`)."""

from support.deployment import Deployment
from support.env import REPO, kubectl_binary, require_tool, venv_bin
from support.manifests import add_task, add_task_yaml, nodetask, nodetask_yaml
from support.net import free_port
from support.wait import WaitTimeout, wait_for

__all__ = [
    "REPO",
    "Deployment",
    "WaitTimeout",
    "add_task",
    "add_task_yaml",
    "free_port",
    "kubectl_binary",
    "nodetask",
    "nodetask_yaml",
    "require_tool",
    "venv_bin",
    "wait_for",
]
