from __future__ import annotations

import datetime as dt
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from penetrator.k8s.bootstrap_token import BOOTSTRAP_GROUP, BootstrapToken, bootstrap_token_secret
from penetrator_dev.testenv.pki import CertificateAuthority, ca_cert_hash

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_token_has_kubeadm_shape_and_never_prints_its_secret() -> None:
    token = BootstrapToken.generate(NOW, dt.timedelta(hours=1))
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token.value)
    assert token.token_secret not in repr(token)
    assert token.token_secret not in str(token)
    assert token.token_secret not in f"{token}"


def test_tokens_differ() -> None:
    assert len({BootstrapToken.generate(NOW, dt.timedelta(hours=1)).value for _ in range(50)}) == 50


def test_secret_carries_kubeadm_usages_group_and_expiry() -> None:
    token = BootstrapToken("abcdef", "0123456789abcdef", NOW + dt.timedelta(hours=2))
    secret = bootstrap_token_secret(token, "test", labels={"a": "b"})
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"] == {
        "name": "bootstrap-token-abcdef",
        "namespace": "kube-system",
        "labels": {"a": "b"},
    }
    data = secret["stringData"]
    assert data["expiration"] == "2026-01-01T02:00:00Z"
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["usage-bootstrap-signing"] == "true"
    assert data["auth-extra-groups"] == BOOTSTRAP_GROUP


def test_ca_hash_is_sha256_of_the_subject_public_key_info() -> None:
    ca = CertificateAuthority.create()
    spki = (
        x509.load_pem_x509_certificate(ca.cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert ca_cert_hash(ca.cert_pem) == "sha256:" + hashlib.sha256(spki).hexdigest()


def test_issued_server_certificate_carries_ip_and_dns_names() -> None:
    ca = CertificateAuthority.create()
    crt, _ = ca.issue("kube-apiserver", server_names=("10.96.0.1", "kubernetes.default"))
    san = (
        x509.load_pem_x509_certificate(crt)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.96.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes.default"]
