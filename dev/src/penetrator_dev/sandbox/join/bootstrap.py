"""`join` and `reset` of one edge machine, at the API level of kubeadm join:
token discovery, TLS bootstrap through a CSR, Node registration, Lease, and the
hand-over to the heartbeat service."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from penetrator_dev.sandbox.join import discovery as disc
from penetrator_dev.sandbox.join.config import JoinParams
from penetrator_dev.sandbox.join.http import (
    Connection,
    HttpError,
    Response,
    insecure_context,
    verified_context,
)
from penetrator_dev.sandbox.join.machine import MachineContext, write_file
from penetrator_dev.sandbox.join.node import ApiError, go_arch, register_node, renew_lease

CLUSTER_INFO_PATH = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
RETRY_S = 1.0

Say = Callable[[str], None]
T = TypeVar("T")


class JoinError(Exception):
    """A join step failed; `code` is the program's exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# exit statuses of `edgeadm join`
EXIT_USAGE = 2
EXIT_DISCOVERY_REFUSED = 3  # wrong CA pin, unknown/expired token, bad signature
EXIT_UNREACHABLE = 4  # the apiserver never answered within the timeout
EXIT_BOOTSTRAP = 5  # the CSR was refused, denied or never signed
EXIT_REGISTER = 6  # the Node or its Lease could not be written
EXIT_MACHINE = 7  # this machine cannot be installed (install-fails fault, arch, state)


@dataclass(frozen=True)
class JoinResult:
    node_name: str
    node_uid: str
    csr_name: str
    arch: str
    ip: str | None
    seconds: float
    heartbeat: str  # "registered", "registered (no heartbeat service running)", "none"


TRANSIENT_STATUS = (429, 500, 502, 503, 504)


async def retrying(what: str, step: Callable[[], Awaitable[T]], deadline: float, say: Say) -> T:
    """Run `step` until it succeeds, retrying connection errors, timeouts and
    429/5xx answers (an apiserver under load) with backoff until `deadline`,
    as the kubelet keeps retrying its registration."""
    delay = 1.0
    while True:
        try:
            return await step()
        except HttpError as e:
            err: Exception = e
        except ApiError as e:
            if e.status not in TRANSIENT_STATUS:
                raise
            err = e
        if time.monotonic() + delay > deadline:
            raise err
        say(f"{what}: {err}; retrying in {delay:.0f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 8.0)


def _bearer(token: disc.Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.value}"}


async def discover(params: JoinParams, say: Say) -> disc.ClusterInfo:
    """Read cluster-info without trusting TLS, verify it by the token's
    signature and the CA pin. Waits (up to the discovery timeout) for the
    apiserver and for the bootstrap signer to sign a fresh token; refuses at
    once when the pin does not match or the token is unknown/expired."""
    deadline = time.monotonic() + params.discovery_timeout
    conn = Connection(params.server, insecure_context(), timeout=10)
    last = ""
    try:
        while True:
            try:
                r = await conn.request("GET", CLUSTER_INFO_PATH)
            except HttpError as e:
                last = str(e)
                r = None
            if r is not None and r.status == 200:
                data = r.json().get("data") or {}
                if disc.JWS_PREFIX + params.token.token_id in data:
                    return disc.validate_cluster_info(
                        data,
                        params.token,
                        list(params.pins),
                        skip_ca_verification=params.skip_ca_verification,
                    )
                # No signature for this token: unknown, expired, or not signed yet.
                # Check the pin on the unsigned content first, so that the token is
                # only ever sent to a server proven to hold the pinned CA.
                info = disc.parse_cluster_kubeconfig(str(data.get("kubeconfig", "")))
                if not params.skip_ca_verification:
                    disc.check_pin(info.ca_pem, list(params.pins))
                if not await _token_accepted(params, info):
                    raise disc.DiscoveryError(
                        f"bootstrap token {params.token.token_id!r} is unknown to this cluster "
                        "or has expired (the apiserver refuses it: 401); create a new token"
                    )
                last = (
                    f"cluster-info is not yet signed for token {params.token.token_id!r} "
                    "(waiting for the bootstrap signer)"
                )
            elif r is not None:
                last = f"reading cluster-info: HTTP {r.status}: {r.message()}"
            if time.monotonic() > deadline:
                raise JoinError(
                    f"discovery timed out after {params.discovery_timeout:.0f}s: {last}",
                    EXIT_UNREACHABLE,
                )
            say(f"[discovery] waiting: {last}")
            await asyncio.sleep(RETRY_S)
    finally:
        await conn.close()


async def _token_accepted(params: JoinParams, info: disc.ClusterInfo) -> bool:
    conn = Connection(
        params.server, verified_context(info.ca_pem), headers=_bearer(params.token), timeout=10
    )
    try:
        r = await conn.request("GET", "/version")
    except HttpError:
        return True  # cannot tell: keep waiting
    finally:
        await conn.close()
    return r.status != 401


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def node_csr_pem(key: ec.EllipticCurvePrivateKey, node_name: str) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_object(csr_pem: bytes, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {
            "generateName": "node-csr-",
            "labels": {"penetrator.sandbox/node": node_name[:63]},
        },
        "spec": {
            "request": base64.b64encode(csr_pem).decode(),
            "signerName": KUBELET_SIGNER,
            # ECDSA key: no key encipherment (the CSR approver accepts both sets)
            "usages": ["digital signature", "client auth"],
        },
    }


async def tls_bootstrap(
    params: JoinParams, info: disc.ClusterInfo, say: Say
) -> tuple[bytes, bytes, str]:
    """Create a CSR for system:node:<name> with the bootstrap token and wait
    until it is approved (by kube-controller-manager for kubeadm's group, by the
    penetrator operator for its tasks' tokens) and signed.
    Returns (key PEM, certificate PEM, CSR name)."""
    key = new_key()
    csr_pem = node_csr_pem(key, params.node_name)
    conn = Connection(
        params.server, verified_context(info.ca_pem), headers=_bearer(params.tls_token), timeout=15
    )
    deadline = time.monotonic() + params.bootstrap_timeout

    async def create() -> Response:
        r = await conn.request("POST", CSR_PATH, csr_object(csr_pem, params.node_name))
        if r.status in TRANSIENT_STATUS:
            raise ApiError("creating the CSR", r)
        return r

    try:
        try:
            r = await retrying("[kubelet-start] creating the CSR", create, deadline, say)
        except (HttpError, ApiError) as e:
            raise JoinError(f"[kubelet-start] creating the CSR: {e}", EXIT_UNREACHABLE) from None
        if r.status == 401:
            raise JoinError(
                f"[kubelet-start] bootstrap token {params.tls_token.token_id!r} is refused "
                "(unknown or expired)",
                EXIT_DISCOVERY_REFUSED,
            )
        if r.status != 201:
            raise JoinError(
                f"[kubelet-start] creating the CSR: HTTP {r.status}: {r.message()}", EXIT_BOOTSTRAP
            )
        name = str(r.json()["metadata"]["name"])
        say(f"[kubelet-start] CSR {name} created, waiting for approval and signing")
        while True:
            got: Response | None = None
            try:
                got = await conn.request("GET", f"{CSR_PATH}/{name}")
            except HttpError as e:
                last = str(e)
            if got is not None and got.status == 200:
                obj = got.json()
                for c in obj.get("status", {}).get("conditions") or []:
                    if c.get("type") in ("Denied", "Failed") and c.get("status", "True") == "True":
                        raise JoinError(
                            f"[kubelet-start] CSR {name} {c['type'].lower()}: "
                            f"{c.get('reason', '')} {c.get('message', '')}".rstrip(),
                            EXIT_BOOTSTRAP,
                        )
                cert_b64 = obj.get("status", {}).get("certificate")
                if cert_b64:
                    cert_pem = base64.b64decode(cert_b64)
                    _check_issued(cert_pem, key, params.node_name)
                    key_pem = key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                    return key_pem, cert_pem, name
                last = "not signed yet"
            elif got is not None:
                last = f"HTTP {got.status}: {got.message()}"
            if time.monotonic() > deadline:
                raise JoinError(
                    f"[kubelet-start] CSR {name} was not signed within "
                    f"{params.bootstrap_timeout:.0f}s ({last})",
                    EXIT_BOOTSTRAP,
                )
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


def _check_issued(cert_pem: bytes, key: ec.EllipticCurvePrivateKey, node_name: str) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, fmt) != key.public_key().public_bytes(enc, fmt):
        raise JoinError("[kubelet-start] the issued certificate is not for our key", EXIT_BOOTSTRAP)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != f"system:node:{node_name}":
        raise JoinError(
            f"[kubelet-start] the issued certificate's subject is {cert.subject.rfc4514_string()}",
            EXIT_BOOTSTRAP,
        )


def kubelet_kubeconfig(server: str, m: MachineContext) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {"server": server, "certificate-authority": str(m.ca_file)},
            }
        ],
        "users": [
            {
                "name": "default-auth",
                "user": {
                    "client-certificate": str(m.cert_file),
                    "client-key": str(m.key_file),
                },
            }
        ],
        "contexts": [
            {"name": "default", "context": {"cluster": "default", "user": "default-auth"}}
        ],
        "current-context": "default",
    }
    return json.dumps(doc, indent=1)


def https(server: str) -> str:
    return server if "://" in server else f"https://{server}"


def heartbeat_running(m: MachineContext) -> bool:
    if m.registry is None:
        return False
    try:
        pid = int((m.registry / "heartbeat.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return b"penetrator_dev.sandbox.join.heartbeat" in cmdline


async def join(params: JoinParams, m: MachineContext, say: Say) -> JoinResult:
    t0 = time.monotonic()
    say("[preflight] Running pre-flight checks")
    if m.install_fails():
        raise JoinError(
            "[preflight] this machine has the sandbox fault install-fails: the install fails here",
            EXIT_MACHINE,
        )
    try:
        arch = go_arch(m.uname_m())
    except ValueError as e:
        raise JoinError(f"[preflight] {e}", EXIT_MACHINE) from None
    say(f"[discovery] Reading cluster-info from {params.server} (token {params.token.token_id})")
    try:
        info = await discover(params, say)
    except disc.DiscoveryError as e:
        raise JoinError(f"[discovery] refused: {e}", EXIT_DISCOVERY_REFUSED) from None
    say("[discovery] cluster-info verified: signature and CA pin match")
    key_pem, cert_pem, csr_name = await tls_bootstrap(params, info, say)
    (m.kubelet_dir / "pki").mkdir(mode=0o700, parents=True, exist_ok=True)
    m.kubelet_dir.chmod(0o700)
    write_file(m.ca_file, info.ca_pem, 0o644)
    write_file(m.key_file, key_pem, 0o600)
    write_file(m.cert_file, cert_pem, 0o600)
    server = https(params.server)
    write_file(m.kubeconfig_file, kubelet_kubeconfig(server, m), 0o600)
    say(f"[kubelet-start] client certificate issued through CSR {csr_name}")
    conn = Connection(
        server, verified_context(info.ca_pem, str(m.cert_file), str(m.key_file)), timeout=15
    )

    async def register() -> tuple[str, str]:
        uid, transition = await register_node(conn, params.node_name, m.ip, arch, params.taints)
        await renew_lease(conn, params.node_name, uid)
        return uid, transition

    deadline = time.monotonic() + params.bootstrap_timeout
    try:
        uid, transition = await retrying(
            "[kubelet-start] registering the Node", register, deadline, say
        )
    except (ApiError, HttpError) as e:
        raise JoinError(f"[kubelet-start] registering the Node: {e}", EXIT_REGISTER) from None
    finally:
        await conn.close()
    record = {
        "node": params.node_name,
        "uid": uid,
        "server": server,
        "ip": m.ip,
        "intranet": m.intranet,
        "arch": arch,
        "machine_dir": str(m.machine_dir),
        "ca": str(m.ca_file),
        "cert": str(m.cert_file),
        "key": str(m.key_file),
        "csr": csr_name,
        "ready_since": transition,
        "joined_at": time.time(),
    }
    write_file(m.node_file, json.dumps(record, indent=1), 0o600)
    entry = m.register(record)
    if entry is None:
        hb = "none"
    elif heartbeat_running(m):
        hb = "registered"
    else:
        hb = "registered (no heartbeat service running)"
    return JoinResult(params.node_name, uid, csr_name, arch, m.ip, time.monotonic() - t0, hb)


def reset(m: MachineContext, say: Say) -> None:
    """Stop heartbeating this machine and remove its credentials. Idempotent."""
    if m.unregister():
        say("[reset] removed the machine from the heartbeat service")
    if m.clear_state():
        say(f"[reset] deleted {m.kubelet_dir} (client key, certificate, kubeconfig)")
    else:
        say("[reset] nothing to clean: this machine holds no node state")
