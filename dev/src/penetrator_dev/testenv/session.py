"""A named control plane that outlives the command that started it
(`penetrator-dev testenv up` / `down`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from penetrator_dev.testenv.controlplane import (
    ControlPlane,
    ControlPlaneOptions,
    ControlPlaneState,
    stop_processes,
)
from penetrator_dev.testenv.controlplane import _is_ours as is_running


def session_dir(name: str) -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
    return base / f"penetrator-testenv-{name}"


def running_state(name: str) -> ControlPlaneState | None:
    """The state of a named control plane whose processes all still run, else None."""
    directory = session_dir(name)
    try:
        state = ControlPlaneState.load(directory)
    except (FileNotFoundError, ValueError):
        return None
    if state.processes and all(is_running(p) for p in state.processes):
        return state
    return None


def up(name: str, options: ControlPlaneOptions) -> ControlPlaneState:
    """Start the named control plane, or return it if it already runs."""
    state = running_state(name)
    if state:
        return state
    down(name)  # a half-dead one from a crash
    directory = session_dir(name)
    cp = ControlPlane(ControlPlaneOptions(**{**options.__dict__, "workdir": directory}))
    cp.start()
    return cp.state


def down(name: str) -> bool:
    """Stop every process of the named control plane and remove its files. Idempotent."""
    directory = session_dir(name)
    if not directory.exists():
        return False
    with contextlib.suppress(FileNotFoundError, ValueError):
        stop_processes(ControlPlaneState.load(directory).processes)
    shutil.rmtree(directory, ignore_errors=True)
    return True
