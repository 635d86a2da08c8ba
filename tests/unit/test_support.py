"""The shared test helpers themselves: waiting is bounded and says what it waited for;
the manifest builder writes what kubectl sends."""

from __future__ import annotations

import socket

import pytest
import yaml

from penetrator.api import NodeTask
from support import REPO, WaitTimeout, add_task, add_task_yaml, free_port, nodetask, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(values), "the fourth value", 10, interval=0.01) == "ready"


def test_wait_for_gives_up_after_its_tries_naming_what_it_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    monkeypatch.setattr("support.wait.time.sleep", lambda _s: None)  # a clock that never moves

    def never() -> None:
        calls.append(1)

    with pytest.raises(WaitTimeout, match=r"waiting for the impossible; last value: None"):
        wait_for(never, "the impossible", 2, interval=0.5)
    assert len(calls) == 5  # ceil(2 / 0.5) + 1 tries, though no time passed


def test_wait_for_refuses_an_unbounded_wait() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        wait_for(lambda: True, "anything", 0)


def test_add_task_is_a_valid_nodetask() -> None:
    body = add_task("nodes", ["10.0.0.1", "10.0.0.2"], "proxy-1")
    task = NodeTask.from_dict(body)
    assert task.spec.target_machines == ["10.0.0.1", "10.0.0.2"]
    assert yaml.safe_load(add_task_yaml("nodes", ["10.0.0.1"], None))["spec"] == {
        "nodeNamePrefix": "edge",
        "targetMachines": ["10.0.0.1"],
        "sshCredential": "login",
    }
    assert nodetask("x", metadata={"uid": "u"}, sshPort=22)["metadata"] == {
        "name": "x",
        "uid": "u",
    }


def test_free_port_is_bindable_and_repo_is_the_checkout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
    assert (REPO / "pyproject.toml").is_file()
