"""Sandbox fixtures (root only). Each test module brings up its own sandbox with
a unique short name, so it never touches the demo's (`pn`), and removes it in
a finally, also when the test fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from penetrator_dev.sandbox import preflight
from penetrator_dev.sandbox.cluster import SandboxCluster, start_cluster
from penetrator_dev.sandbox.deploy import NAMESPACE, deploy_penetrator
from penetrator_dev.sandbox.join import heartbeat as hb
from penetrator_dev.sandbox.lifecycle import Sandbox, down
from penetrator_dev.sandbox.sshprobe import run_probe
from penetrator_dev.sandbox.topology import SandboxSpec
from support import Deployment


def require_sandbox() -> None:
    """Fail (never skip) when this machine cannot run the sandbox: root, the tools
    (ip, nft, sshd, ...) and network namespaces; the message names what to install."""
    problems = preflight.problems()
    if problems:
        pytest.fail("the sandbox cannot run here: " + "; ".join(problems), pytrace=False)


_counter = iter(range(1, 1000))


def sandbox_name() -> str:
    """A short unique sandbox name for this test process ("t" + 4 digits + n)."""
    return f"t{os.getpid() % 10000:04d}{next(_counter)}"


@pytest.fixture(scope="session")
def sandbox_new_name() -> Any:
    """A function returning a fresh short sandbox name."""
    return sandbox_name


@pytest.fixture(scope="session")
def sandbox_factory() -> Iterator[Any]:
    """Bring up sandboxes; all of them are brought down at the end."""
    require_sandbox()
    names: list[str] = []

    def make(**kw: Any) -> Sandbox:
        kw.setdefault("name", sandbox_name())
        names.append(kw["name"])
        return Sandbox.up(SandboxSpec(**kw))

    try:
        yield make
    finally:
        for n in names:
            down(n)


@pytest.fixture(scope="module")
def sandbox_net(sandbox_factory: Any) -> Iterator[Sandbox]:
    """Two NAT'd intranets (same range) + one routed, 3 machines each, netns layout."""
    sb = sandbox_factory(machines=3, intranets=2, routed=1, slow_delay_ms=150)
    try:
        yield sb
    finally:
        down(sb.name)


@pytest.fixture(scope="session")
def sandbox_cluster(sandbox_factory: Any) -> Iterator[tuple[Sandbox, SandboxCluster]]:
    """A sandbox with its cluster: the real control plane in the cloud, the
    control-plane node and proxy nodes (two NAT'd intranets, one routed), 3
    machines each. Shared by the session; tests clean up what they create."""
    sb = sandbox_factory(machines=3, intranets=2, routed=1)
    try:
        yield sb, start_cluster(sb)
    finally:
        down(sb.name)


@pytest.fixture(scope="session")
def sandbox_ssh() -> Any:
    """ssh_run(sb, intranet, hosts, command, ...): asyncssh from a proxy node."""
    return ssh_run


def ssh_run(
    sb: Sandbox,
    intranet: int,
    hosts: list[str],
    command: str = "echo $EDGE_MACHINE_IP",
    *,
    password: bool = False,
    key: bool = True,
    known_hosts: bool = True,
    timeout: float = 20,
    concurrency: int = 100,
    repeat: int = 1,
) -> dict[str, Any]:
    """asyncssh from the proxy node's namespace of `intranet`."""
    st = sb.status()["ssh"]
    req = {
        "hosts": hosts,
        "command": command,
        "password_file": st["password_file"] if password else None,
        "key_file": st["private_key"] if key else None,
        "known_hosts": st["known_hosts"][str(intranet)] if known_hosts else None,
        "timeout": timeout,
        "concurrency": concurrency,
        "repeat": repeat,
    }
    return run_probe(sb.topology.proxy_namespace(intranet), req, timeout=timeout * 10 + 60)


LOGIN_SECRET = "login"
"""The machines' root login (key ``passwd``), in edge-system."""


@pytest.fixture(scope="module")
def deployed(
    sandbox_factory: Any, request: pytest.FixtureRequest
) -> Iterator[tuple[Sandbox, SandboxCluster]]:
    """A sandbox of the module's ``DEPLOYMENT`` with its cluster, the heartbeat
    service, penetrator deployed from deploy/penetrator.yaml (operator and webhook)
    and the login Secret ``login``; brought down after the module."""
    spec: Deployment = getattr(request.module, "DEPLOYMENT", Deployment())
    sb = sandbox_factory(machines=spec.machines, intranets=spec.intranets)
    try:
        info = start_cluster(sb)
        hb.start_sandbox_heartbeats(Sandbox.load(sb.name))
        deploy_penetrator(sb.name, info, dict(spec.settings))
        ssh = sb.status()["ssh"]
        info.kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", LOGIN_SECRET,
            f"--from-file=passwd={ssh['password_file']}",
        )  # fmt: skip
        yield sb, info
    finally:
        down(sb.name)
