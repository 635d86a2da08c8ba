"""Token discovery as `kubeadm join` does it (pure parts, no I/O).

``cluster-info`` (ConfigMap in kube-public, readable anonymously) holds a
kubeconfig with the cluster's CA, and, for every valid bootstrap token, a
detached JWS ``jws-kubeconfig-<token-id>`` over that kubeconfig, signed by the
controller manager's bootstrap signer with HS256 under the token's secret.
Verifying the signature proves the content came from someone who knows the
token; the CA pin (``sha256:`` over the CA's SubjectPublicKeyInfo) proves it is
the cluster the user meant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

JWS_PREFIX = "jws-kubeconfig-"
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
PIN_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


class DiscoveryError(Exception):
    """Discovery refused: the message says why, and never holds the token secret."""


@dataclass(frozen=True)
class Token:
    token_id: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> Token:
        m = TOKEN_RE.match(text.strip())
        if not m:
            raise ValueError("the bootstrap token does not have the form [a-z0-9]{6}.[a-z0-9]{16}")
        return cls(m.group(1), m.group(2))

    @property
    def value(self) -> str:
        return f"{self.token_id}.{self.secret}"

    def __repr__(self) -> str:  # the secret never reaches a log
        return f"Token(id={self.token_id!r})"

    __str__ = __repr__


def parse_pin(text: str) -> str:
    """Normalise a CA pin: `sha256:<64 hex>` (hex lower-cased)."""
    t = text.strip()
    algo, _, hexpart = t.partition(":")
    if algo.lower() != "sha256" or not PIN_RE.match("sha256:" + hexpart.lower()):
        raise ValueError(f"the CA certificate hash {t!r} is not of the form sha256:<64 hex digits>")
    return "sha256:" + hexpart.lower()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_detached(content: str, token: Token) -> str:
    """The detached JWS the bootstrap signer writes (for tests and symmetry)."""
    header = b64url_encode(json.dumps({"alg": "HS256", "kid": token.token_id}).encode())
    signing_input = f"{header}.{b64url_encode(content.encode())}".encode()
    sig = hmac.new(token.secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}..{b64url_encode(sig)}"


def verify_detached(jws: str, content: str, token: Token) -> None:
    """Verify a detached JWS (`header..signature`, HS256, key = token secret)
    over `content`; raise DiscoveryError saying what is wrong."""
    parts = jws.split(".")
    if len(parts) != 3 or parts[1] != "":
        raise DiscoveryError("cluster-info's signature is not a detached JWS (header..signature)")
    header_b64, _, sig_b64 = parts
    try:
        header = json.loads(b64url_decode(header_b64))
        sig = b64url_decode(sig_b64)
    except (ValueError, binascii.Error):
        raise DiscoveryError("cluster-info's signature cannot be decoded") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        alg = header.get("alg") if isinstance(header, dict) else None
        raise DiscoveryError(f"cluster-info's signature uses algorithm {alg!r}, not HS256")
    if header.get("kid") not in (None, token.token_id):
        raise DiscoveryError(
            f"cluster-info's signature is for token id {header.get('kid')!r}, "
            f"not {token.token_id!r}"
        )
    signing_input = f"{header_b64}.{b64url_encode(content.encode())}".encode()
    want = hmac.new(token.secret.encode(), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        raise DiscoveryError(
            f"the signature of cluster-info does not match bootstrap token "
            f"{token.token_id!r}: wrong token secret, or the content was altered"
        )


@dataclass(frozen=True)
class ClusterInfo:
    server: str
    ca_pem: bytes


def parse_cluster_kubeconfig(text: str) -> ClusterInfo:
    try:
        doc = yaml.safe_load(text)
        cluster = doc["clusters"][0]["cluster"]
        server = str(cluster["server"])
        ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        raise DiscoveryError("cluster-info holds no usable kubeconfig (server and CA)") from None
    if b"BEGIN CERTIFICATE" not in ca_pem:
        raise DiscoveryError("cluster-info's CA is not a PEM certificate")
    return ClusterInfo(server, ca_pem)


def ca_pins(ca_pem: bytes) -> list[str]:
    """`sha256:<hex>` of every certificate's SubjectPublicKeyInfo in the bundle."""
    out = []
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise DiscoveryError("cluster-info's CA cannot be parsed") from None
    for cert in certs:
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        out.append("sha256:" + hashlib.sha256(spki).hexdigest())
    return out


def check_pin(ca_pem: bytes, pins: list[str]) -> None:
    """At least one CA of the bundle must match one pin (kubeadm's rule)."""
    have = ca_pins(ca_pem)
    if not set(have) & set(pins):
        raise DiscoveryError(
            f"the CA pin does not match: expected {', '.join(pins)}, got {', '.join(have)}"
        )


def validate_cluster_info(
    data: dict[str, Any], token: Token, pins: list[str], *, skip_ca_verification: bool = False
) -> ClusterInfo:
    """Verify `cluster-info`'s data: signature under `token` (must be present),
    then the CA pin. Returns the trusted server and CA."""
    content = data.get("kubeconfig")
    if not isinstance(content, str):
        raise DiscoveryError("cluster-info has no kubeconfig")
    jws = data.get(JWS_PREFIX + token.token_id)
    if not isinstance(jws, str):
        raise DiscoveryError(
            f"bootstrap token {token.token_id!r} is unknown to this cluster or has expired "
            "(cluster-info carries no signature for it); create a new token"
        )
    verify_detached(jws, content, token)
    info = parse_cluster_kubeconfig(content)
    if not skip_ca_verification:
        check_pin(info.ca_pem, pins)
    return info
