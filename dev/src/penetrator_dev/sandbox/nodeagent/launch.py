"""Runs inside a pod's private mount namespace (`unshare --mount`) in its node's
network namespace: bind-mounts the pod's volumes at their mountPaths, then
becomes the container's command. Invoked by the node agent only.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_NOSUID = 2


def _mount(source: str, target: str, flags: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def bind(source: str, target: str, read_only: bool) -> None:
    if Path(source).is_dir():
        Path(target).mkdir(parents=True, exist_ok=True)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).touch(exist_ok=True)
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _mount_tmpfs(target: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID, b"mode=755") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def private_dev(copy: str, extra: dict[str, str]) -> None:
    """/dev as a pod sees it: a tmpfs with the host's entries bind-mounted one by one
    (symlinks copied), plus ``extra`` (file name -> source), e.g. the termination log,
    so that no file is ever created in the host's /dev."""
    Path(copy).mkdir(parents=True, exist_ok=True)
    _mount("/dev", copy, MS_BIND | MS_REC)
    _mount_tmpfs("/dev")
    for entry in os.scandir(copy):
        target = f"/dev/{entry.name}"
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
            continue
        if entry.is_dir(follow_symlinks=False):
            os.mkdir(target)
        else:
            Path(target).touch()
        _mount(entry.path, target, MS_BIND | MS_REC)
    for name, source in extra.items():
        Path(f"/dev/{name}").touch()
        _mount(source, f"/dev/{name}", MS_BIND)


def main() -> None:
    plan_file = Path(sys.argv[1])
    plan = json.loads(plan_file.read_text())
    plan_file.unlink()  # it holds secret env values; the process env is where they live now
    source, target = plan.get("termination_log") or ("", "")
    extra: dict[str, str] = {}
    if target.startswith("/dev/") and "/" not in target[len("/dev/") :]:
        extra[target[len("/dev/") :]] = source
    elif target:
        bind(source, target, False)
    if extra:
        private_dev(plan["dev_copy"], extra)
    for source, target, read_only in plan["mounts"]:
        bind(source, target, bool(read_only))
    os.chdir(plan["cwd"])
    argv: list[str] = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])  # noqa: S606 - the container command, as given


if __name__ == "__main__":
    main()
