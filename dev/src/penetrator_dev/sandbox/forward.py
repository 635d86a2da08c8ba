"""The host's way to the cloud's apiserver address: a port forwarder process
listening on 127.0.0.1 in the host's namespace whose outgoing sockets are
created inside the cloud namespace (see relay.py). It does not care whether
anything listens behind it yet."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from penetrator_dev.sandbox.state import ProcessRecord, kill_pids, start_ticks, state_dir

ROLE_FORWARD = "forward"


def start_forwarder(
    name: str,
    cloud_namespace: str,
    address: str,
    port: int,
    listen_port: int = 0,
    timeout: float = 20,
) -> tuple[ProcessRecord, int]:
    """Start the forwarder 127.0.0.1:listen_port -> (cloud ns) address:port.
    Returns its record and the port it listens on (listen_port 0: a free one)."""
    d = state_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    port_file = d / "forward.port"
    port_file.unlink(missing_ok=True)
    log = d / "logs" / "forward.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "penetrator_dev.sandbox.relay",
        "--sandbox-name",
        name,
        "--role",
        ROLE_FORWARD,
        "--listen",
        f"127.0.0.1:{listen_port}",
        "--connect",
        f"{address}:{port}",
        "--connect-netns",
        f"/run/netns/{cloud_namespace}",
        "--port-file",
        str(port_file),
    ]
    with open(log, "ab") as logf:
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True
        )
    rec = ProcessRecord(ROLE_FORWARD, "", p.pid, start_ticks(p.pid) or 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            return rec, int(port_file.read_text().strip())
        if p.poll() is not None:
            break
        time.sleep(0.05)
    stop_forwarder(rec)
    tail = Path(log).read_text()[-400:] if Path(log).exists() else ""
    raise RuntimeError(f"port forwarder did not start (listen port {listen_port}): {tail}")


def stop_forwarder(rec: ProcessRecord) -> None:
    if start_ticks(rec.pid) == rec.start_ticks:
        kill_pids([rec.pid])
