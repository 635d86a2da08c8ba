"""Real sshd on the edge machines: password file and key both log in (asyncssh
from the proxy namespace), each machine is itself, uname can answer aarch64."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from penetrator_dev.sandbox.lifecycle import Sandbox

pytestmark = [pytest.mark.netns]


def test_password_file_and_key_files_are_private(sandbox_net: Sandbox) -> None:
    ssh = sandbox_net.status()["ssh"]
    for f in (ssh["password_file"], ssh["private_key"]):
        assert os.stat(f).st_mode & 0o777 == 0o600, f
    assert ssh["port"] == 22
    assert ssh["user"] == "root"


@pytest.mark.parametrize(("password", "key"), [(True, False), (False, True)])
def test_root_logs_in_from_the_proxy_node(
    sandbox_net: Sandbox, sandbox_ssh: Any, password: bool, key: bool
) -> None:
    for it in sandbox_net.topology.intranets:
        ips = [m.ip for m in it.machines]
        r = sandbox_ssh(
            sandbox_net,
            it.index,
            ips,
            "id -u; echo $EDGE_MACHINE_IP $EDGE_INTRANET; pwd",
            password=password,
            key=key,
        )
        assert r["failed"] == 0, r["results"]
        for x in r["results"]:
            uid, ident, pwd = x["stdout"].splitlines()
            assert uid == "0"
            assert ident == f"{x['host']} {it.index}"
            assert pwd == str(sandbox_net.machine_dir(it.index, x["host"]) / "home")


def test_the_hosts_root_account_is_untouched(sandbox_net: Sandbox, sandbox_ssh: Any) -> None:
    it = sandbox_net.topology.intranets[0]
    r = sandbox_ssh(sandbox_net, 1, [it.machines[0].ip], "grep ^root: /etc/passwd")
    assert r["ok"] == 1
    assert str(Path(sandbox_net.status()["state_dir"])) in r["results"][0]["stdout"]
    host_root = Path("/etc/passwd").read_text().splitlines()
    assert not any(sandbox_net.name in line for line in host_root if line.startswith("root:"))


def test_each_machine_has_its_own_state(sandbox_net: Sandbox, sandbox_ssh: Any) -> None:
    it = sandbox_net.topology.intranets[0]
    ips = [m.ip for m in it.machines]
    r = sandbox_ssh(sandbox_net, 1, ips, 'echo "$EDGE_MACHINE_IP" > "$HOME/who"')
    assert r["failed"] == 0
    for ip in ips:
        assert (sandbox_net.machine_dir(1, ip) / "home" / "who").read_text().strip() == ip


def test_uname_answers_aarch64_for_chosen_machines(sandbox_net: Sandbox, sandbox_ssh: Any) -> None:
    it = sandbox_net.topology.intranets[0]
    a, b = it.machines[0].ip, it.machines[1].ip
    sandbox_net.set_arch(1, a, "aarch64")
    try:
        r = sandbox_ssh(sandbox_net, 1, [a, b], "uname -m")
        out = {x["host"]: x["stdout"].strip() for x in r["results"]}
        assert out == {a: "aarch64", b: "x86_64"}
        st = {(m["intranet"], m["ip"]): m["arch"] for m in sandbox_net.status()["machines"]}
        assert st[(1, a)] == "aarch64"
    finally:
        sandbox_net.set_arch(1, a, "x86_64")
    r = sandbox_ssh(sandbox_net, 1, [a], "uname -m")
    assert r["results"][0]["stdout"].strip() == "x86_64"
