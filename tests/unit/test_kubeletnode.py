"""kubeletnode's undo of what kubelets do to the host: with another sandbox up, the
host's sysctls and the directories made are left to it (a directory that is a mount
point in another mount namespace is detached there if removed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from penetrator_dev.sandbox import kubeletnode
from penetrator_dev.sandbox.state import ROOT_ENV, state_dir


def test_down_with_another_sandbox_up_hands_over_the_host_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "root"))
    made = tmp_path / "made"
    made.mkdir()
    first, second = state_dir("first"), state_dir("second")
    for sd, value, when in ((first, "0", 1000), (second, "1", 2000)):
        sd.mkdir(parents=True)
        f = sd / kubeletnode.SYSCTLS_FILE
        f.write_text(json.dumps({"vm.overcommit_memory": value}))
        os.utime(f, (when, when))
    (first / kubeletnode.MADE_DIRS_FILE).write_text(json.dumps(["/x"]))
    (second / kubeletnode.MADE_DIRS_FILE).write_text(json.dumps([str(made), "/x"]))

    kubeletnode.cleanup("second")

    assert made.is_dir()  # not removed while "first" is up
    assert json.loads((first / kubeletnode.MADE_DIRS_FILE).read_text()) == ["/x", str(made)]
    # the values found first are the host's own
    assert json.loads((first / kubeletnode.SYSCTLS_FILE).read_text()) == {
        "vm.overcommit_memory": "0"
    }
    assert not (second / kubeletnode.SYSCTLS_FILE).exists()
    assert not (second / kubeletnode.MADE_DIRS_FILE).exists()


def test_the_last_sandbox_down_removes_the_directories_it_was_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "root"))
    made = tmp_path / "made" / "sub"
    made.mkdir(parents=True)
    sd = state_dir("only")
    sd.mkdir(parents=True)
    (sd / kubeletnode.MADE_DIRS_FILE).write_text(json.dumps([str(made.parent), str(made)]))
    kubeletnode.cleanup("only")
    assert not made.parent.exists()
    assert not (sd / kubeletnode.MADE_DIRS_FILE).exists()


def test_a_sandbox_without_kubelets_up_is_not_given_the_host_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sandbox without a cluster (`up --no-cluster`) may be up while one with
    kubelets goes down: that one must still remove what it made, not leave it to a
    sandbox that never restores anything."""
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "root"))
    made = tmp_path / "made"
    made.mkdir()
    state_dir("agents").mkdir(parents=True)  # up, but no kubelets: no host state file
    sd = state_dir("real")
    sd.mkdir(parents=True)
    (sd / kubeletnode.MADE_DIRS_FILE).write_text(json.dumps([str(made)]))
    kubeletnode.cleanup("real")
    assert not made.exists()
    assert not (state_dir("agents") / kubeletnode.MADE_DIRS_FILE).exists()
