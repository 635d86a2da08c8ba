"""`edgeadm` for sandbox edge machines: `join` and `reset` with the command
line of `edgeadm join` / `kubeadm join`::

    edgeadm join 172.31.0.1:6443 --token abcdef.0123456789abcdef \
        --discovery-token-ca-cert-hash sha256:<hex> --node-name edge-x1y2z3
    edgeadm join --config join.yaml        # a kubeadm JoinConfiguration (no secret in argv)
    edgeadm reset [--force]

Exit status: 0 joined/reset; 2 bad command line or configuration; 3 discovery
refused (CA pin mismatch, unknown or expired token, bad signature); 4 the
apiserver did not answer in time; 5 the CSR was refused or never signed; 6 the
Node or Lease could not be written; 7 this machine cannot be installed (the
install-fails fault, an unsupported architecture). The token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from penetrator_dev.sandbox.join import bootstrap as bs
from penetrator_dev.sandbox.join.config import (
    DEFAULT_BOOTSTRAP_TIMEOUT,
    DEFAULT_DISCOVERY_TIMEOUT,
    ConfigError,
    JoinParams,
    params_from_config,
)
from penetrator_dev.sandbox.join.discovery import Token, parse_pin
from penetrator_dev.sandbox.join.machine import MachineContext, MachineError

DISCOVERY_FLAGS = (
    "server",
    "token",
    "discovery_token",
    "tls_bootstrap_token",
    "ca_cert_hashes",
    "unsafe_skip_ca_verification",
    "node_name",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"edgeadm: error: {message}", file=sys.stderr)
        raise SystemExit(bs.EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeadm", description="Join this sandbox edge machine to a cluster.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    j = sub.add_parser("join", help="join this machine as a node")
    j.add_argument("server", nargs="?", metavar="api-server-endpoint", help="host:port")
    j.add_argument("--config", help="a kubeadm JoinConfiguration file")
    j.add_argument("--token", help="token for both discovery and TLS bootstrap")
    j.add_argument("--discovery-token", dest="discovery_token")
    j.add_argument("--tls-bootstrap-token", dest="tls_bootstrap_token")
    j.add_argument(
        "--discovery-token-ca-cert-hash",
        dest="ca_cert_hashes",
        action="append",
        default=[],
        metavar="sha256:HEX",
    )
    j.add_argument(
        "--discovery-token-unsafe-skip-ca-verification",
        dest="unsafe_skip_ca_verification",
        action="store_true",
    )
    j.add_argument("--node-name", dest="node_name")
    # accepted for compatibility with edgeadm/kubeadm command lines; no effect here
    j.add_argument("--install-pkg-path", dest="install_pkg_path")
    j.add_argument("--ignore-preflight-errors", action="append", default=[])
    j.add_argument("--cri-socket")
    j.add_argument("--enable-edge", nargs="?", const="true")
    j.add_argument("-v", "--v", dest="verbosity", type=int, default=0)
    j.add_argument(
        "--discovery-timeout", type=float, default=None, help=argparse.SUPPRESS
    )  # seconds; kubeadm takes it from the configuration only
    r = sub.add_parser("reset", help="stop being a node and delete this machine's node state")
    r.add_argument("-f", "--force", action="store_true")
    r.add_argument("--ignore-preflight-errors", action="append", default=[])
    r.add_argument("--cri-socket")
    r.add_argument("-v", "--v", dest="verbosity", type=int, default=0)
    sub.add_parser("version", help="print the version")
    return p


def _tok(text: str, flag: str) -> Token:
    try:
        return Token.parse(text)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None


def params_from_args(a: argparse.Namespace, m: MachineContext | None) -> JoinParams:
    default_name = (
        f"edge-{m.ip.replace('.', '-').replace(':', '-')}" if m and m.ip else os.uname().nodename
    ).lower()
    if a.config:
        mixed = [
            "--" + f.replace("_", "-")
            for f in DISCOVERY_FLAGS
            if getattr(a, f) not in (None, False, [])
        ]
        if mixed:
            raise ConfigError(f"--config cannot be mixed with {', '.join(mixed)}")
        try:
            text = Path(a.config).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read --config {a.config}: {e.strerror}") from None
        p = params_from_config(text, default_name)
    else:
        if not a.server:
            raise ConfigError("give the apiserver endpoint (host:port) or --config FILE")
        tok_text = a.discovery_token or a.token
        if not tok_text:
            raise ConfigError("give --token (or --discovery-token)")
        token = _tok(tok_text, "--discovery-token" if a.discovery_token else "--token")
        tls_text = a.tls_bootstrap_token or a.token
        tls = _tok(tls_text, "--tls-bootstrap-token") if tls_text else token
        pins: list[str] = []
        try:
            for h in a.ca_cert_hashes:
                pins += [parse_pin(x) for x in h.split(",") if x.strip()]
        except ValueError as e:
            raise ConfigError(f"--discovery-token-ca-cert-hash: {e}") from None
        p = JoinParams(
            server=a.server,
            token=token,
            tls_token=tls,
            pins=tuple(pins),
            node_name=(a.node_name or default_name),
            skip_ca_verification=a.unsafe_skip_ca_verification,
            discovery_timeout=DEFAULT_DISCOVERY_TIMEOUT,
            bootstrap_timeout=DEFAULT_BOOTSTRAP_TIMEOUT,
        )
    if a.discovery_timeout is not None:
        from dataclasses import replace

        p = replace(p, discovery_timeout=a.discovery_timeout, bootstrap_timeout=a.discovery_timeout)
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def run_join(a: argparse.Namespace) -> int:
    try:
        m = MachineContext.from_env()
    except MachineError as e:
        _err(str(e))
        return bs.EXIT_MACHINE
    try:
        params = params_from_args(a, m)
    except ConfigError as e:
        _err(str(e))
        return bs.EXIT_USAGE
    if a.install_pkg_path and not Path(a.install_pkg_path).exists():
        _err(f"--install-pkg-path {a.install_pkg_path}: no such file")
        return bs.EXIT_USAGE
    m.journal("join", "start", node=params.node_name)
    code = 1
    try:
        code = _join(params, m)
    finally:
        m.journal("join", "end", node=params.node_name, rc=code)
    return code


def _join(params: JoinParams, m: MachineContext) -> int:
    try:
        res = asyncio.run(bs.join(params, m, _say))
    except bs.JoinError as e:
        _err(str(e))
        return e.code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    _say(
        f"[kubelet-start] Node {res.node_name} registered ({res.arch}, "
        f"InternalIP {res.ip or '-'}), Ready, Lease in kube-node-lease"
    )
    if res.heartbeat == "none":
        _say("[kubelet-start] warning: no heartbeat registry: the node will turn NotReady")
    elif res.heartbeat != "registered":
        print(
            "[kubelet-start] warning: no heartbeat service is running for this intranet; "
            "the node turns NotReady until one starts",
            file=sys.stderr,
        )
    _say(
        f"\nThis node has joined the cluster in {res.seconds:.1f}s:\n"
        "* Certificate signing request was sent to apiserver and a response was received.\n"
        "* The Kubelet was informed of the new secure connection details.\n\n"
        "Run 'kubectl get nodes' on the control-plane to see this node join the cluster."
    )
    return 0


def run_reset(a: argparse.Namespace) -> int:
    try:
        m = MachineContext.from_env()
    except MachineError as e:
        _err(str(e))
        return bs.EXIT_MACHINE
    if not a.force and sys.stdin.isatty():
        ans = input("[reset] Are you sure you want to proceed? [y/N]: ")
        if ans.strip().lower() not in ("y", "yes"):
            _err("aborted by the user")
            return 1
    m.journal("reset", "start")
    bs.reset(m, _say)
    m.journal("reset", "end", rc=0)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "join":
        return run_join(a)
    if a.command == "reset":
        return run_reset(a)
    print("edgeadm version: penetrator-sandbox stand-in (kubeadm join at the API level)")
    return 0
