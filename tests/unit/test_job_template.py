"""penetrator.job.template: quoting. No generated remote command contains an
unquoted user value: shlex.split gives back exactly the intended argv."""

from __future__ import annotations

import shlex
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penetrator.api.jobconfig import InstallTemplate, JobConfig, Machine
from penetrator.job.package import Package, RemotePaths, extract_command, probe_script
from penetrator.job.redact import Redactor
from penetrator.job.template import (
    machine_variables,
    render_argv,
    render_command,
    render_install,
    write_file_command,
)

HASH = "sha256:" + "ab" * 32
TOKEN = "abcdef.0123456789abcdef"


def cfg(**kw: object) -> JobConfig:
    base: dict[str, object] = {
        "machines": [{"name": "edge-a", "ip": "10.10.1.1"}],
        "taskLabel": "nodes-abc123",
        "apiServer": "172.31.0.1:6443",
        "caCertHash": HASH,
        "packages": {"amd64": "/pkg/amd64.tgz"},
    }
    base.update(kw)
    return JobConfig.model_validate(base)


def test_default_template_renders_edgeadm_with_the_token_only_in_the_file() -> None:
    c = cfg()
    out = render_install(c, c.machines[0], "amd64", "/w/pkg/x", {"token": TOKEN})
    assert out.reset == ["/w/pkg/x/edgeadm reset --force"]
    assert len(out.join) == 1
    sh, dash_c, _script, tool, token_file, *args = shlex.split(out.join[0])
    assert (sh, dash_c, tool) == ("sh", "-c", "/w/pkg/x/edgeadm")
    # the original's command line, with the token read from the file on the machine
    assert args == [
        "join", "172.31.0.1:6443", "--token", "@token@",
        "--discovery-token-ca-cert-hash", HASH, "--node-name", "edge-a",
        "--install-pkg-path", "/w/pkg/x/kube-linux-amd64-v1.37.2.tar.gz",
    ]  # fmt: skip
    assert [(f.path, f.content) for f in out.files] == [(token_file, TOKEN)]
    assert token_file == "/var/lib/penetrator/token_file"
    assert TOKEN not in repr(out.files[0])
    for line in [*out.reset, *out.join]:
        assert TOKEN not in line


def test_other_joins_are_templates_too() -> None:
    k3s = InstallTemplate(
        join=[
            [
                "{package_dir}/install.sh",
                "--node-name={node_name}",
                "--server",
                "https://{api_server}",
            ],
            ["sh", "-c", "echo {extra}"],
        ],
        files={"token_file": "{token}\n"},
        variables={"extra": "x=1"},
    )
    c = cfg(template=k3s.model_dump())
    out = render_install(c, c.machines[0], "arm64", "/p", {"token": TOKEN})
    assert shlex.split(out.join[0]) == [
        "/p/install.sh",
        "--node-name=edge-a",
        "--server",
        "https://172.31.0.1:6443",
    ]
    assert shlex.split(out.join[1]) == ["sh", "-c", "echo x=1"]
    assert out.files[0].content == TOKEN + "\n"


def test_a_value_is_never_rescanned() -> None:
    t = InstallTemplate(join=[["x", "{v}"]], variables={"v": "{node_name}"[1:-1]})
    c = cfg(template=t.model_dump())
    v = machine_variables(c, c.machines[0], "amd64", "/p")
    assert render_argv(["{v}{node_name}"], v) == ["node_nameedge-a"]


def test_redactor_refuses_a_command_holding_a_secret() -> None:
    t = InstallTemplate(join=[["echo", "{v}"]], variables={"v": "hunter22"})
    c = cfg(template=t.model_dump())
    with pytest.raises(ValueError, match="secret") as e:
        render_install(c, c.machines[0], "amd64", "/p", {"token": TOKEN}, Redactor(["hunter22"]))
    assert "hunter22" not in str(e.value)


# Anything at all in an argument, including every shell metacharacter.
hostile = st.text(alphabet=st.sampled_from(string.printable + "é€\u00a0"), min_size=0, max_size=40)


@settings(max_examples=300)
@given(st.lists(hostile, min_size=1, max_size=6))
def test_property_every_argument_comes_back_whole(args: list[str]) -> None:
    variables = {f"v{i}": a for i, a in enumerate(args)}
    argv = ["prog", *[f"{{v{i}}}" for i in range(len(args))], "--x={v0}"]
    line = render_command(argv, variables)
    assert shlex.split(line) == ["prog", *args, f"--x={args[0]}"]


@settings(max_examples=200)
@given(
    name=st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z"),
    octets=st.tuples(*[st.integers(0, 255)] * 4),
    extra=st.from_regex(r"\A[A-Za-z0-9._:/=@+,%-]{0,30}\Z"),
    label=st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z"),
)
def test_property_rendered_install_commands_split_to_the_intended_argv(
    name: str, octets: tuple[int, ...], extra: str, label: str
) -> None:
    ip = ".".join(map(str, octets))
    t = InstallTemplate(
        reset=[["{package_dir}/tool", "reset", "--node={node_name}", "{extra}"]],
        join=[["{package_dir}/tool", "join", "{node_ip}", "{task_label}", "{extra}"]],
        variables={"extra": extra},
    )
    c = cfg(machines=[{"name": name, "ip": ip}], template=t.model_dump(), taskLabel=label)
    out = render_install(c, Machine(name=name, ip=ip), "amd64", "/w/p", {"token": TOKEN})
    assert shlex.split(out.reset[0]) == ["/w/p/tool", "reset", f"--node={name}", extra]
    assert shlex.split(out.join[0]) == ["/w/p/tool", "join", ip, label, extra]
    for line in [*out.reset, *out.join]:
        assert TOKEN not in line


@given(st.from_regex(r"\A[A-Za-z0-9._/-]{1,60}\Z"))
def test_property_file_and_package_commands_quote_paths(path: str) -> None:
    line = write_file_command("/w/" + path)
    assert "/w/" + path + ".tmp" in shlex.split(line)


def test_package_commands() -> None:
    pkg = Package("amd64", __import__("pathlib").Path("/x"), "f" * 64, 1)
    p = RemotePaths.of("/w", pkg)
    assert p.archive == "/w/packages/" + "f" * 64 + ".tgz"
    assert p.directory == "/w/pkg/" + "f" * 16
    assert shlex.split(probe_script(p))[:4] == ["(sha256sum", "--", p.archive, "2>/dev/null"]
    assert "tar -xzf " + p.archive in extract_command(p)
