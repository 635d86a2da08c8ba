"""Sandbox parts that need no root: state, preflight, sshd config, the login
shell, the delaying relay (loopback only)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from penetrator_dev.sandbox import machines as mach
from penetrator_dev.sandbox import preflight, relay
from penetrator_dev.sandbox.state import ProcessRecord, State, spec_to_dict
from penetrator_dev.sandbox.topology import Layout, SandboxSpec, build_topology


def test_state_round_trip() -> None:
    spec = SandboxSpec(name="x1", machines=7, layout=Layout.ADDRESSES, routed=1)
    st = State(spec=spec_to_dict(spec), processes=[ProcessRecord("sshd", "x1-i1h1", 42, 7)])
    st.faults["1/10.10.1.1"] = "slow"
    back = State.from_json(st.to_json())
    assert back == st
    assert back.sandbox_spec() == spec


def test_preflight_names_the_package_of_a_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(preflight.TOOLS, "no-such-tool-xyz", "some-debian-package")
    problems = preflight.problems()
    assert any("some-debian-package" in p and "apt-get install" in p for p in problems)


def test_preflight_refuses_non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(preflight.PreflightError, match="root"):
        preflight.check()


def test_sshd_config_has_what_the_sandbox_relies_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENETRATOR_SANDBOX_ROOT", str(tmp_path))
    t = build_topology(SandboxSpec(name="u1", machines=2))
    it = t.intranets[0]
    conf = mach.sshd_config("u1", it, it.hosts[0], mach.ROLE_MAIN)
    for want in (
        "Port 22",
        "ListenAddress 0.0.0.0",
        "PermitRootLogin yes",
        "PasswordAuthentication yes",
        "PubkeyAuthentication yes",
        "UsePAM no",
        "UseDNS no",
        "MaxStartups 2000:30:4000",
        f"EDGE_MACHINES={tmp_path}/sandbox-u1/machines/1",
    ):
        assert want in conf
    alt = mach.sshd_config("u1", it, it.hosts[0], mach.ROLE_NEW_HOST_KEY)
    assert "Port 2202" in alt
    assert "u1-i1m1-new" in alt


def test_credentials_are_private_and_shadow_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENETRATOR_SANDBOX_ROOT", str(tmp_path))
    c = mach.write_credentials("u2")
    assert c.password_file.stat().st_mode & 0o777 == 0o600
    assert c.private_key.stat().st_mode & 0o777 == 0o600
    etc = tmp_path / "sandbox-u2" / "etc"
    root = (etc / "passwd").read_text().splitlines()[0]
    assert root.startswith("root:x:0:0:root:")
    assert root.endswith("/bin/edge-shell")
    shadow = (etc / "shadow").read_text()
    assert shadow.startswith("root:$6$")
    assert (etc / "shadow").read_text() != (etc / "shadow-wrong").read_text()
    # idempotent: the password stays
    pw = c.password_file.read_text()
    mach.write_credentials("u2")
    assert c.password_file.read_text() == pw


def test_edge_shell_finds_the_machine_from_the_local_address(tmp_path: Path) -> None:
    shell = tmp_path / "edge-shell"
    shell.write_text(mach.EDGE_SHELL)
    shell.chmod(0o755)
    machines = tmp_path / "machines"
    (machines / "10.10.1.7" / "home").mkdir(parents=True)
    (machines / "10.10.1.7" / "bin").mkdir()
    (machines / "10.10.1.7" / "bin" / "uname").write_text(
        mach.UNAME_SHIM.replace("{arch}", "aarch64")
    )
    (machines / "10.10.1.7" / "bin" / "uname").chmod(0o755)
    env = {
        "SSH_CONNECTION": "10.10.0.2 51234 10.10.1.7 22",
        "EDGE_MACHINES": str(machines),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [str(shell), "-c", 'echo "$EDGE_MACHINE_IP|$HOME|$(pwd)|$(uname -m)|$(uname -s)"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    home = machines / "10.10.1.7" / "home"
    assert out == f"10.10.1.7|{home}|{home}|aarch64|Linux"
    env["SSH_CONNECTION"] = "10.10.0.2 51234 10.10.9.9 22"
    bad = subprocess.run([str(shell), "-c", "true"], env=env, capture_output=True, check=False)
    assert bad.returncode == 254


class _RelayAsyncio:
    """The relay's view of asyncio, recording each sleep (the delays it applies)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)


class _FrozenClock:
    """A clock that never moves: each chunk's wait is the whole delay."""

    def monotonic(self) -> float:
        return 0.0


async def test_relay_pipe_delays_each_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _RelayAsyncio()
    monkeypatch.setattr(relay, "asyncio", seen)
    monkeypatch.setattr(relay, "time", _FrozenClock())

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.read(100))
        await w.drain()
        w.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await relay._handle(r, w, ("127.0.0.1", bport), 22, 0.1)

    front = await asyncio.start_server(handle, "127.0.0.1", 0)
    fport = front.sockets[0].getsockname()[1]
    async with backend, front:
        r, w = await asyncio.open_connection("127.0.0.1", fport)
        w.write(b"hello")
        await w.drain()
        data = await asyncio.wait_for(r.read(100), 5)
        w.close()
    assert data == b"hello"
    # one delay each way (and one per end of stream), each the whole 0.1 s;
    # how long a relayed round trip takes: bench/timings.py
    assert len(seen.sleeps) >= 2
    assert set(seen.sleeps) == {0.1}
