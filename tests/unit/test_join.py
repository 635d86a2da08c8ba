"""The sandbox's edgeadm, pure parts: detached JWS, CA pins, JoinConfiguration
and command-line parsing, the package, the heartbeat registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from penetrator_dev.sandbox.join import discovery as disc
from penetrator_dev.sandbox.join.bootstrap import csr_object, node_csr_pem
from penetrator_dev.sandbox.join.config import (
    ConfigError,
    params_from_config,
    parse_duration,
)
from penetrator_dev.sandbox.join.heartbeat import HeartbeatService
from penetrator_dev.sandbox.join.machine import MachineContext, MachineError, sandbox_layout
from penetrator_dev.sandbox.join.node import go_arch, lease_object, node_object
from penetrator_dev.sandbox.join.package import build_join_package, package_name
from penetrator_dev.sandbox.join.program import build_parser, params_from_args

TOKEN = disc.Token("abcdef", "0123456789abcdef")
OTHER = disc.Token("abcdef", "fedcba9876543210")


def _ca() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


CA_PEM, CA_KEY = _ca()


def _kubeconfig(ca: bytes = CA_PEM) -> str:
    import base64

    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        "    server: https://172.31.0.1:6443\n"
        f"    certificate-authority-data: {base64.b64encode(ca).decode()}\n"
    )


def _pin(ca: bytes = CA_PEM) -> str:
    spki = (
        x509.load_pem_x509_certificate(ca)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


# ------------------------------------------------------------------------ JWS


def test_a_detached_signature_verifies_under_its_token() -> None:
    content = _kubeconfig()
    jws = disc.sign_detached(content, TOKEN)
    header, payload, _sig = jws.split(".")
    assert payload == ""  # detached
    assert json.loads(disc.b64url_decode(header)) == {"alg": "HS256", "kid": "abcdef"}
    disc.verify_detached(jws, content, TOKEN)


def test_a_known_vector_verifies() -> None:
    # HMAC-SHA256 computed independently over "<header>.<b64url(content)>"
    import base64
    import hmac

    header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"abcdef"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b"hello").rstrip(b"=").decode()
    sig = hmac.new(b"0123456789abcdef", f"{header}.{body}".encode(), "sha256").digest()
    jws = f"{header}..{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    disc.verify_detached(jws, "hello", TOKEN)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j, c: (j, c + "x"), "does not match bootstrap token 'abcdef'"),
        (lambda j, c: (disc.sign_detached(c, OTHER), c), "wrong token secret"),
        (lambda j, c: (j.replace("..", ".e30."), c), "not a detached JWS"),
        (lambda j, c: ("!!!..***", c), "cannot be decoded"),
        (
            lambda j, c: (disc.b64url_encode(b'{"alg":"none"}') + ".." + j.split("..")[1], c),
            "not HS256",
        ),
        (
            lambda j, c: (
                disc.b64url_encode(b'{"alg":"HS256","kid":"zzzzzz"}') + ".." + j.split("..")[1],
                c,
            ),
            "for token id 'zzzzzz'",
        ),
    ],
)
def test_a_bad_signature_is_refused(mutate: Any, message: str) -> None:
    content = _kubeconfig()
    jws, content2 = mutate(disc.sign_detached(content, TOKEN), content)
    with pytest.raises(disc.DiscoveryError, match=message) as e:
        disc.verify_detached(jws, content2, TOKEN)
    assert TOKEN.secret not in str(e.value)


def test_cluster_info_is_validated_signature_then_pin() -> None:
    content = _kubeconfig()
    data = {"kubeconfig": content, "jws-kubeconfig-abcdef": disc.sign_detached(content, TOKEN)}
    info = disc.validate_cluster_info(data, TOKEN, [_pin()])
    assert info.server == "https://172.31.0.1:6443"
    assert info.ca_pem == CA_PEM
    other_ca, _ = _ca()
    with pytest.raises(disc.DiscoveryError) as e:
        disc.validate_cluster_info(data, TOKEN, [_pin(other_ca)])
    assert str(e.value) == (f"the CA pin does not match: expected {_pin(other_ca)}, got {_pin()}")
    # the unsafe skip accepts any CA (the signature still counts)
    assert disc.validate_cluster_info(data, TOKEN, [], skip_ca_verification=True)
    with pytest.raises(disc.DiscoveryError, match="unknown to this cluster or has expired"):
        disc.validate_cluster_info({"kubeconfig": content}, TOKEN, [_pin()])


def test_token_and_pin_formats() -> None:
    assert disc.Token.parse("abcdef.0123456789abcdef") == TOKEN
    assert "0123456789abcdef" not in repr(TOKEN)
    for bad in ("abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde", ""):
        with pytest.raises(ValueError, match=r"does not have the form") as e:
            disc.Token.parse(bad)
        assert bad not in str(e.value) or not bad
    assert disc.parse_pin("SHA256:" + "AB" * 32) == "sha256:" + "ab" * 32
    for bad in ("sha256:abc", "md5:" + "ab" * 16, "ab" * 32):
        with pytest.raises(ValueError, match="sha256:<64 hex digits>"):
            disc.parse_pin(bad)


# --------------------------------------------------------- JoinConfiguration

V1BETA4 = f"""
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 172.31.0.1:6443
    token: abcdef.0123456789abcdef
    caCertHashes:
    - {"sha256:" + "ab" * 32}
timeouts:
  discovery: 1m30s
  tlsBootstrap: 2m
nodeRegistration:
  name: edge-abc123
  taints:
  - key: edge
    effect: NoSchedule
"""


def test_a_v1beta4_join_configuration_is_read() -> None:
    p = params_from_config(V1BETA4)
    assert p.server == "172.31.0.1:6443"
    assert p.token == TOKEN
    assert p.tls_token == TOKEN
    assert p.pins == ("sha256:" + "ab" * 32,)
    assert p.node_name == "edge-abc123"
    assert p.discovery_timeout == 90
    assert p.bootstrap_timeout == 120
    assert [(t.key, t.effect) for t in p.taints] == [("edge", "NoSchedule")]


def test_a_v1beta3_configuration_among_other_documents_is_found() -> None:
    text = (
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n---\n"
        + V1BETA4.replace("v1beta4", "v1beta3")
        .replace("timeouts:\n  discovery: 1m30s\n  tlsBootstrap: 2m\n", "")
        .replace("caCertHashes:", "timeout: 5m0s\n    caCertHashes:")
        + "---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
    )
    p = params_from_config(text)
    assert p.node_name == "edge-abc123"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.replace("kind: JoinConfiguration", "kind: Other"),
            "no kind: JoinConfiguration",
        ),
        (lambda t: t.replace("v1beta4", "v1beta9"), "apiVersion 'kubeadm.k8s.io/v1beta9'"),
        (
            lambda t: t.replace("    apiServerEndpoint: 172.31.0.1:6443\n", ""),
            "apiServerEndpoint",
        ),
        (
            lambda t: t.replace("abcdef.0123456789abcdef", "abcdef.short"),
            r"discovery.bootstrapToken.token: the bootstrap token does not have the form",
        ),
        (lambda t: t.replace("sha256:" + "ab" * 32, "sha256:xyz"), "caCertHashes"),
        (
            lambda t: t.replace("caCertHashes:\n    - sha256:" + "ab" * 32, "caCertHashes: []"),
            "pin the cluster",
        ),
        (lambda t: t.replace("name: edge-abc123", "name: Edge_ABC"), "nodeRegistration.name"),
        (lambda t: t.replace("1m30s", "soon"), "is not a duration"),
        (lambda t: t.replace("NoSchedule", "Never"), r"taints\[0\].effect"),
        (lambda t: t + "  : [", "not valid YAML"),
    ],
)
def test_a_bad_join_configuration_names_the_field(edit: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        params_from_config(edit(V1BETA4))
    assert "0123456789abcdef" not in str(e.value)


def test_durations() -> None:
    assert parse_duration("5m0s") == 300
    assert parse_duration("1h") == 3600
    assert parse_duration("250ms") == 0.25
    assert parse_duration(30) == 30


# -------------------------------------------------------------- command line


def _args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_edgeadm_join_flags() -> None:
    a = _args(
        "join", "172.31.0.1:6443", "--token", "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash", "sha256:" + "ab" * 32 + ",sha256:" + "cd" * 32,
        "--node-name", "edge-x", "--install-pkg-path", "./kube.tar.gz",
    )  # fmt: skip
    p = params_from_args(a, None)
    assert p.pins == ("sha256:" + "ab" * 32, "sha256:" + "cd" * 32)
    assert p.node_name == "edge-x"
    assert p.tls_token == TOKEN


def test_config_cannot_be_mixed_with_discovery_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "j.yaml"
    cfg.write_text(V1BETA4)
    a = _args("join", "--config", str(cfg), "--token", "abcdef.0123456789abcdef")
    with pytest.raises(ConfigError, match="--config cannot be mixed with --token"):
        params_from_args(a, None)
    assert params_from_args(_args("join", "--config", str(cfg)), None).node_name == "edge-abc123"


def test_join_without_pin_or_token_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="--discovery-token-ca-cert-hash"):
        params_from_args(_args("join", "h:6443", "--token", "abcdef.0123456789abcdef"), None)
    with pytest.raises(ConfigError, match="give --token"):
        params_from_args(_args("join", "h:6443"), None)
    with pytest.raises(SystemExit) as e:
        _args("join", "--bogus")
    assert e.value.code == 2


# ------------------------------------------------------------ machine, node


def test_machine_context_from_the_sandbox_environment(tmp_path: Path) -> None:
    d = tmp_path / "sandbox-pn" / "machines" / "2" / "10.10.1.7"
    d.mkdir(parents=True)
    m = MachineContext.from_env({"EDGE_MACHINE_DIR": str(d)})
    assert (m.ip, m.intranet) == ("10.10.1.7", 2)
    assert m.registry == tmp_path / "sandbox-pn" / "heartbeat" / "2"
    assert sandbox_layout(tmp_path) is None
    with pytest.raises(MachineError, match="EDGE_MACHINE_DIR is not set"):
        MachineContext.from_env({})


def test_every_join_and_reset_is_recorded_in_the_machines_own_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from penetrator_dev.sandbox.join.machine import INSTALL_FAILS_MARKER
    from penetrator_dev.sandbox.join.program import main

    d = tmp_path / "sandbox-pn" / "machines" / "1" / "10.10.1.9"
    d.mkdir(parents=True)
    (d / INSTALL_FAILS_MARKER).touch()  # the join fails at preflight, before any request
    monkeypatch.setenv("EDGE_MACHINE_DIR", str(d))
    monkeypatch.setenv("EDGE_MACHINE_IP", "10.10.1.9")
    join = [
        "join", "172.31.0.1:6443", "--token", "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash", "sha256:" + "ab" * 32, "--node-name", "edge-j",
    ]  # fmt: skip
    assert main(join) == 7
    assert main(["reset", "--force"]) == 0
    assert main(join) == 7
    assert main(["join", "h:6443"]) == 2  # a usage error installs nothing: not recorded
    lines = [json.loads(x) for x in (d / "edgeadm.log").read_text().splitlines()]
    assert [(x["command"], x["event"], x.get("rc")) for x in lines] == [
        ("join", "start", None), ("join", "end", 7),
        ("reset", "start", None), ("reset", "end", 0),
        ("join", "start", None), ("join", "end", 7),
    ]  # fmt: skip
    assert {x["node"] for x in lines if x["command"] == "join"} == {"edge-j"}
    assert "0123456789abcdef" not in (d / "edgeadm.log").read_text()  # no token secret
    assert MachineContext.from_env({"EDGE_MACHINE_DIR": str(d)}).journal_file == d / "edgeadm.log"


def test_arch_mapping() -> None:
    assert go_arch("x86_64\n") == "amd64"
    assert go_arch("aarch64") == "arm64"
    with pytest.raises(ValueError, match="unsupported architecture 'riscv64'"):
        go_arch("riscv64")


def test_csr_is_what_the_node_client_approver_accepts() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = node_csr_pem(key, "edge-1")
    csr = x509.load_pem_x509_csr(pem)
    assert csr.subject.rfc4514_string() == "CN=system:node:edge-1,O=system:nodes"
    assert csr.is_signature_valid
    assert not list(csr.extensions)  # no SANs
    obj = csr_object(pem, "edge-1")
    assert obj["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    assert obj["spec"]["usages"] == ["digital signature", "client auth"]


def test_node_and_lease_objects() -> None:
    n = node_object("edge-1", "10.10.1.1", "arm64", (), "2026-01-01T00:00:00Z")
    assert n["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert n["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.10.1.1"}
    lease = lease_object("edge-1", "uid-1", "2026-01-01T00:00:00.000000Z")
    assert lease["metadata"]["ownerReferences"][0] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "edge-1",
        "uid": "uid-1",
    }


# ------------------------------------------------------------------ package


def test_the_package_is_reproducible_and_laid_out_like_edgeadms(tmp_path: Path) -> None:
    a = build_join_package(tmp_path / "a", "arm64")
    b = build_join_package(tmp_path / "b", "arm64")
    assert a.sha256 == b.sha256 == hashlib.sha256(a.path.read_bytes()).hexdigest()
    assert a.path.name == package_name("arm64") == "edgeadm-arm64-v1.37.2.tar.gz"
    with tarfile.open(a.path) as t:
        names = t.getnames()
        # plain `tar -xzf` (penetrator's job) and `--strip-components 1` (SuperEdge's
        # script) both find ./edgeadm
        assert "edgeadm" in names
        assert f"{a.top_dir}/edgeadm" in names
        member = t.getmember(f"{a.top_dir}/edgeadm")
        assert member.mode == 0o755
        f = t.extractfile(member)
        assert f is not None
        script = f.read().decode()
    assert script.startswith("#!/bin/sh\n")
    assert '-m penetrator_dev.sandbox.join "$@"' in script
    assert f"{a.top_dir}/kube-linux-arm64-v1.37.2.tar.gz" in names
    assert "kube-linux-arm64-v1.37.2.tar.gz" in names
    for strip in ([], ["--strip-components", "1"]):
        out = tmp_path / f"x{len(strip)}"
        out.mkdir()
        subprocess.run(["tar", "-xzf", str(a.path), "-C", str(out), *strip], check=True)
        assert (out / "edgeadm").stat().st_mode & 0o777 == 0o755
    with pytest.raises(ValueError, match="arch must be one of"):
        build_join_package(tmp_path, "mips")


# ------------------------------------------------------- heartbeat registry


def _client_files(tmp_path: Path) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "system:node:x")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")]))
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(CA_KEY, hashes.SHA256())
    )
    files = {
        "ca": tmp_path / "ca.crt",
        "cert": tmp_path / "c.crt",
        "key": tmp_path / "c.key",
    }
    files["ca"].write_bytes(CA_PEM)
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in files.items()}


async def test_the_service_follows_the_registry_and_the_down_fault(tmp_path: Path) -> None:
    files = _client_files(tmp_path)
    reg = tmp_path / "sandbox-x" / "heartbeat" / "1"
    (reg / "machines").mkdir(parents=True)
    svc = HeartbeatService(reg, tmp_path / "sandbox-x", lease_interval=3600)
    for i in (1, 2):
        rec = {"node": f"n{i}", "server": "https://127.0.0.1:1", "ip": f"10.10.1.{i}",
               "intranet": 1, **files}  # fmt: skip
        (reg / "machines" / f"m{i}.json").write_text(json.dumps(rec))
    svc.scan()
    assert sorted(m.node for m in svc.members.values()) == ["n1", "n2"]
    (reg / "machines" / "m1.json").unlink()
    svc.scan()
    assert [m.node for m in svc.members.values()] == ["n2"]
    (tmp_path / "sandbox-x" / "state.json").write_text(
        json.dumps({"faults": {"1/10.10.1.2": "down", "1/10.10.1.9": "refuse"}})
    )
    svc.read_faults()
    assert svc.down == {"1/10.10.1.2"}
    assert svc.is_down(svc.members["m2.json"])
    (reg / "machines" / "bad.json").write_text("{")
    svc.scan()
    assert "bad.json" not in svc.members
    assert any("cannot load bad.json" in e for e in svc.errors)
    for m in list(svc.members.values()):
        assert m.task is not None
        m.task.cancel()
    await asyncio.sleep(0)


# ------------------------------------------------------------- http client


async def test_the_http_client_reads_chunked_and_sized_bodies_and_reconnects(
    tmp_path: Path,
) -> None:
    import ssl

    from penetrator_dev.sandbox.join.http import Connection, HttpError, verified_context

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(3)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "s.crt").write_bytes(pem)
    (tmp_path / "s.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    served = {"n": 0}

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            line = await r.readline()
            if not line:
                break
            length = 0
            while (h := await r.readline()) not in (b"\r\n", b""):
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            body = await r.readexactly(length) if length else b""
            served["n"] += 1
            if b"/chunked" in line:
                w.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
                )
            elif b"/close" in line:
                w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
                await w.drain()
                w.close()
                return
            else:
                out = json.dumps({"echo": json.loads(body) if body else None}).encode()
                w.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
            await w.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    try:
        c = Connection(f"https://127.0.0.1:{port}", verified_context(pem), timeout=5)
        r = await c.request("GET", "/chunked")
        assert (r.status, r.json()) == (200, {"a": 1})
        r = await c.request("POST", "/x", {"k": "v"})
        assert (r.status, r.json()) == (201, {"echo": {"k": "v"}})
        r = await c.request("GET", "/close")  # the server closes after answering
        assert r.status == 404
        r = await c.request("GET", "/chunked")  # a new connection, transparently
        assert r.status == 200
        await c.close()
        other = Connection(f"https://127.0.0.1:{port}", verified_context(CA_PEM), timeout=5)
        with pytest.raises(HttpError, match="not trusted"):
            await other.request("GET", "/chunked")
    finally:
        server.close()
        await server.wait_closed()


async def test_registration_retries_transient_errors_only() -> None:
    import time

    from penetrator_dev.sandbox.join.bootstrap import retrying
    from penetrator_dev.sandbox.join.http import HttpError, Response
    from penetrator_dev.sandbox.join.node import ApiError

    calls = {"n": 0}
    said: list[str] = []

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise HttpError("POST /api/v1/nodes on 172.31.0.1:6443: timed out")
        if calls["n"] == 2:
            raise ApiError("creating Node x", Response(503, {}, b'{"message":"busy"}'))
        return "ok"

    assert await retrying("register", flaky, time.monotonic() + 30, said.append) == "ok"
    assert calls["n"] == 3
    assert "timed out" in said[0]
    assert "HTTP 503: busy" in said[1]

    async def forbidden() -> str:
        raise ApiError("creating Node x", Response(403, {}, b'{"message":"no"}'))

    with pytest.raises(ApiError, match="HTTP 403"):
        await retrying("register", forbidden, time.monotonic() + 30, said.append)

    async def down() -> str:
        raise HttpError("cannot connect")

    with pytest.raises(HttpError):
        await retrying("register", down, time.monotonic() + 0.5, said.append)
