"""`penetrator-dev sandbox ...`: the local edge sandbox (development and demo only)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from penetrator_dev.sandbox import preflight
from penetrator_dev.sandbox.cluster import SandboxCluster, load_cluster, start_cluster
from penetrator_dev.sandbox.deploy import deploy_penetrator, merge
from penetrator_dev.sandbox.faults import parse_fault
from penetrator_dev.sandbox.lifecycle import Sandbox, SandboxError, down
from penetrator_dev.sandbox.network import CommandError, exec_argv
from penetrator_dev.sandbox.topology import ARCHES, Fault, Layout, SandboxSpec

NAME_ENV = "PENETRATOR_SANDBOX"
name_option = click.option(
    "--name",
    default=lambda: os.environ.get(NAME_ENV, "pn"),
    show_default="pn or $PENETRATOR_SANDBOX",
    help="Sandbox name: prefix of its namespaces and its state directory.",
)
intranet_option = click.option(
    "--intranet",
    "-i",
    type=int,
    default=1,
    show_default=True,
    help="Intranet of the machine (addresses repeat across intranets).",
)


def _fail(msg: str) -> None:
    raise click.ClickException(msg)


def _load(name: str) -> Sandbox:
    try:
        return Sandbox.load(name)
    except SandboxError as e:
        raise click.ClickException(str(e)) from None


def _parse_fault_arg(text: str) -> tuple[tuple[int, str], Fault]:
    """IP=KIND or K/IP=KIND."""
    target, _, kind = text.partition("=")
    k, _, ip = target.rpartition("/")
    f = parse_fault(kind)
    if f is None:
        raise click.BadParameter("`clear` makes no sense at up")
    return (int(k) if k else 1, ip), f


def export_lines(st: dict[str, Any]) -> list[str]:
    fwd = st["cloud"]["forward"]
    return [
        f"export {NAME_ENV}={st['name']}",
        f"export PENETRATOR_SANDBOX_STATE={st['state_dir']}",
        f"export PENETRATOR_SANDBOX_APISERVER={fwd['host']}:{fwd['port']}"
        f"   # -> {fwd['to']} in {st['cloud']['namespace']}",
        f"export PENETRATOR_SANDBOX_SSH_KEY={st['ssh']['private_key']}",
        f"export PENETRATOR_SANDBOX_PASSWORD_FILE={st['ssh']['password_file']}",
    ]


def print_summary(st: dict[str, Any]) -> None:
    con = Console()
    t = Table(title=f"sandbox {st['name']} ({st['layout']} layout)")
    for col in ("intranet", "routed", "range", "router", "proxy node", "machines"):
        t.add_column(col)
    for it in st["intranets"]:
        t.add_row(
            str(it["index"]),
            "yes" if it["routed"] else "NAT",
            it["cidr"],
            f"{it['router']['namespace']} {it['router']['wan_address']}",
            f"{it['proxy']['namespace']} {it['proxy']['address']}",
            str(it["machines"]),
        )
    con.print(t)
    c = st["cloud"]
    con.print(
        f"cloud: namespace {c['namespace']}, apiserver address "
        f"{c['apiserver']['address']}:{c['apiserver']['port']}, "
        f"forwarded from {c['forward']['host']}:{c['forward']['port']} (pid {c['forward']['pid']})"
    )
    faults = [m for m in st["machines"] if m["fault"]]
    if faults:
        con.print("faults: " + ", ".join(f"{m['intranet']}/{m['ip']}={m['fault']}" for m in faults))
    con.print(
        f"ssh: root, password file {st['ssh']['password_file']}, key {st['ssh']['private_key']}"
    )


@click.group()
def sandbox() -> None:
    """A local one-way network with NAT'd edge machines running real sshd."""


@sandbox.command()
@name_option
@click.option(
    "--machines", "-n", type=int, default=3, show_default=True, help="Edge machines per intranet."
)
@click.option(
    "--intranets",
    "-k",
    type=int,
    default=1,
    show_default=True,
    help="NAT'd intranets (all reuse 10.10.0.0/16).",
)
@click.option(
    "--routed",
    type=int,
    is_flag=False,
    flag_value=1,
    default=0,
    help="Add routed intranet(s) (no NAT, the cloud reaches them): --routed [N].",
)
@click.option(
    "--layout",
    type=click.Choice([x.value for x in Layout]),
    default=None,
    help="netns: a namespace+sshd per machine; addresses: many addresses per "
    "namespace/sshd. Default: netns up to 50 machines.",
)
@click.option(
    "--per-host",
    type=int,
    default=250,
    show_default=True,
    help="Layout addresses: machine addresses per namespace/sshd.",
)
@click.option("--apiserver-port", type=int, default=6443, show_default=True)
@click.option(
    "--forward-port",
    type=int,
    default=0,
    help="Host port (127.0.0.1) forwarded to the cloud apiserver; 0: any free port.",
)
@click.option("--arm-every", type=int, default=0, help="Every n-th machine answers aarch64.")
@click.option("--slow-delay-ms", type=int, default=300, show_default=True)
@click.option(
    "--real-join",
    type=int,
    default=0,
    metavar="N",
    help="The first N machines of intranet 1 get a real join stack (containerd, kubelet, "
    "kubeadm, a systemctl shim): the kubeadm template joins them for real. Layout netns.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="[K/]IP=KIND",
    help="Put a machine in a fault at up (repeatable).",
)
@click.option(
    "--cluster/--no-cluster",
    default=True,
    show_default=True,
    help="Also start the control plane in the cloud and register the proxy nodes.",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def up(
    name: str,
    machines: int,
    intranets: int,
    routed: int,
    layout: str | None,
    per_host: int,
    apiserver_port: int,
    forward_port: int,
    arm_every: int,
    slow_delay_ms: int,
    real_join: int,
    faults: tuple[str, ...],
    cluster: bool,
    output: str,
) -> None:
    """Bring the sandbox up (idempotent) and print its summary and export lines."""
    spec = SandboxSpec(
        name=name,
        machines=machines,
        intranets=intranets,
        routed=routed,
        layout=Layout(layout) if layout else None,
        per_host=per_host,
        apiserver_port=apiserver_port,
        forward_port=forward_port,
        arm_every=arm_every,
        slow_delay_ms=slow_delay_ms,
        real_join=real_join,
    )
    try:
        spec.validate()
        fault_map = dict(_parse_fault_arg(f) for f in faults)
        t0 = time.monotonic()
        sb = Sandbox.up(spec, faults=fault_map)
        info = start_cluster(sb) if cluster else None
        sb = Sandbox.load(spec.name)  # the cluster added processes to its state
    except (
        ValueError,
        KeyError,
        SandboxError,
        preflight.PreflightError,
        CommandError,
        RuntimeError,
    ) as e:
        raise click.ClickException(str(e)) from None
    st = sb.status()
    if output == "json":
        click.echo(json.dumps(st, indent=1))
        return
    print_summary(st)
    if info:
        _print_cluster(info)
    click.echo(f"up in {time.monotonic() - t0:.1f}s")
    for line in export_lines(st):
        click.echo(line)
    if info:
        click.echo(f"export KUBECONFIG={info.kubeconfig}")


def _print_cluster(info: SandboxCluster) -> None:
    proxies = ", ".join(f"{n} (intranet {k})" for k, n in info.proxy_nodes.items())
    Console().print(
        f"cluster: apiserver {info.server} (CA {info.ca_cert_hash[:19]}...), "
        f"nodes {info.control_plane_node}, {proxies}"
    )


@sandbox.command()
@name_option
@click.option("-n", "--namespace", default="edge-system", show_default=True)
@click.argument("pod")
def logs(name: str, namespace: str, pod: str) -> None:
    """Print the log of a pod a sandbox node ran (also after the pod is gone, unlike
    `kubectl logs`)."""
    info = load_cluster(_load(name))
    if info is None:
        _fail(f"sandbox {name} has no running cluster")
        return
    path = info.pod_log(pod, namespace)
    if path is None:
        _fail(f"no log for pod {namespace}/{pod} on the sandbox's nodes")
        return
    click.echo(path.read_text(errors="replace"), nl=False)


@sandbox.command()
@name_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def status(name: str, output: str) -> None:
    """Namespaces, proxy nodes, machines, faults, SSH credentials."""
    st = _load(name).status()
    if output == "json":
        click.echo(json.dumps(st, indent=1))
        return
    print_summary(st)
    info = load_cluster(_load(name))
    if info:
        _print_cluster(info)
    click.echo(f"healthy: {st['up']}")
    for line in export_lines(st):
        click.echo(line)
    if info:
        click.echo(f"export KUBECONFIG={info.kubeconfig}")


@sandbox.command("down")
@name_option
def down_cmd(name: str) -> None:
    """Remove every namespace, link, rule, mount and process of the sandbox."""
    if os.geteuid() != 0:
        _fail("the sandbox needs root")
    rep = down(name)
    click.echo(
        f"sandbox {name} down: {len(rep.namespaces)} namespaces, "
        f"{len(rep.killed)} processes stopped"
    )


@sandbox.command("exec", context_settings={"ignore_unknown_options": True})
@name_option
@intranet_option
@click.argument("target")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(name: str, intranet: int, target: str, argv: tuple[str, ...]) -> None:
    """Run ARGV inside TARGET: cloud, proxy-K, router-K or a machine IP."""
    sb = _load(name)
    try:
        ns = sb.namespace(target, intranet)
    except KeyError as e:
        raise click.ClickException(str(e.args[0])) from None
    full = exec_argv(ns, list(argv))
    sys.stdout.flush()
    os.execvp(full[0], full)  # noqa: S606 (replace this process)


@sandbox.command(context_settings={"ignore_unknown_options": True})
@name_option
@intranet_option
@click.argument("ip")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, intranet: int, ip: str, argv: tuple[str, ...]) -> None:
    """ssh root@IP from the intranet's proxy node with the sandbox key."""
    sb = _load(name)
    st = sb.status()
    cmd = [
        "ssh",
        "-i",
        st["ssh"]["private_key"],
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={st['ssh']['known_hosts'][str(intranet)]}",
        "-o",
        "StrictHostKeyChecking=yes",
        f"root@{ip}",
        *argv,
    ]
    full = exec_argv(sb.topology.proxy_namespace(intranet), cmd)
    os.execvp(full[0], full)  # noqa: S606 (replace this process)


@sandbox.command()
@name_option
@intranet_option
@click.argument("ip")
@click.argument("kind", type=click.Choice([f.value for f in Fault] + ["clear"]))
def fault(name: str, intranet: int, ip: str, kind: str) -> None:
    """Put machine IP into a fault (or `clear` it)."""
    sb = _load(name)
    try:
        sb.fault(intranet, ip, parse_fault(kind))
    except (KeyError, ValueError, CommandError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{intranet}/{ip}: {kind}")


@sandbox.command()
@name_option
@intranet_option
@click.argument("ip")
@click.argument("arch", type=click.Choice(list(ARCHES)))
def arch(name: str, intranet: int, ip: str, arch: str) -> None:
    """Make machine IP answer ARCH to `uname -m`."""
    sb = _load(name)
    try:
        sb.set_arch(intranet, ip, arch)
    except (KeyError, SandboxError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{intranet}/{ip}: {arch}")


# ---------------------------------------------------- join package and heartbeats


@sandbox.command("join-package")
@click.option("--dest", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--arch", "arches", multiple=True, type=click.Choice(["amd64", "arm64"]))
def join_package(dest: str, arches: tuple[str, ...]) -> None:
    """Build the sandbox's edgeadm package(s) (the join program for edge machines)."""
    from pathlib import Path

    from penetrator_dev.sandbox.join.package import build_join_package

    for a in arches or ("amd64", "arm64"):
        pkg = build_join_package(Path(dest), a)
        click.echo(f"{pkg.path}  sha256:{pkg.sha256}")


@sandbox.command()
@name_option
@click.argument("action", type=click.Choice(["start", "stop", "status"]))
def heartbeat(name: str, action: str) -> None:
    """Start, stop or show the heartbeat services (one per intranet) that keep
    joined edge machines Ready."""
    from penetrator_dev.sandbox.join import heartbeat as hb

    sb = _load(name)
    ks = [it.index for it in sb.topology.intranets]
    if action == "start":
        for rec in hb.start_sandbox_heartbeats(sb):
            click.echo(f"{rec.role}: pid {rec.pid} in {rec.namespace}")
    elif action == "stop":
        hb.stop_sandbox_heartbeats(name, ks)
    else:
        for k in ks:
            st = hb.service_status(hb.sandbox_registry_dir(name, k))
            click.echo(f"intranet {k}: " + (json.dumps(st) if st is not None else "not running"))


def _nested(path: list[str], value: Any) -> dict[str, Any]:
    """["a", "b"], 1 -> {"a": {"b": 1}}"""
    return {path[0]: _nested(path[1:], value) if len(path) > 1 else value}


@sandbox.command()
@name_option
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="PATH=VALUE",
    help="An operator setting, e.g. reconcile.maxAttempts=1 (YAML value; repeatable).",
)
def deploy(name: str, settings: tuple[str, ...]) -> None:
    """Deploy the CRD, RBAC, webhook and operator (deploy/penetrator.yaml) into the sandbox."""
    info = load_cluster(_load(name))
    if info is None:
        _fail(f"sandbox {name} has no running cluster (penetrator-dev sandbox up)")
        return
    changes: dict[str, Any] = {}
    for item in settings:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{item!r} is not PATH=VALUE", param_hint="--set")
        changes = merge(changes, _nested(path.split("."), yaml.safe_load(value)))
    try:
        deploy_penetrator(name, info, changes)
    except SandboxError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"penetrator deployed in sandbox {name}: the operator and its webhook answer")
