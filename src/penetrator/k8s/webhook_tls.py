"""The webhook's serving certificate: generated at start-up, never shipped.

A small CA and a serving certificate for the webhook Service's DNS names are made
with ``cryptography`` and kept in one Secret (``edge-system/penetrator-webhook-tls``)
so that every replica behind the Service serves the same certificate; the first
replica creates it, the others read it, and a certificate near its end (or for other
names) is replaced. The CA goes into the webhook configurations' ``caBundle``.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
)
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"


@dataclass(frozen=True)
class ServingCert:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def as_secret_data(self) -> dict[str, str]:
        return {
            CA_KEY: base64.b64encode(self.ca_pem).decode(),
            CERT_KEY: base64.b64encode(self.cert_pem).decode(),
            KEY_KEY: base64.b64encode(self.key_pem).decode(),
        }


def service_hosts(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc"]


def build_serving_cert(hosts: list[str], now: dt.datetime | None = None) -> ServingCert:
    """A fresh CA (P-256) and a serving certificate for ``hosts`` signed by it."""
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "penetrator-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[-1])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCert(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def usable(cert: ServingCert, hosts: list[str], now: dt.datetime | None = None) -> bool:
    """Valid for ``hosts`` for at least ``RENEW_BEFORE`` more."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        leaf = x509.load_pem_x509_certificate(cert.cert_pem)
        x509.load_pem_x509_certificate(cert.ca_pem)
        serialization.load_pem_private_key(cert.key_pem, password=None)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return leaf.not_valid_after_utc - now > RENEW_BEFORE and set(hosts) <= set(
        sans.get_values_for_type(x509.DNSName)
    )


def _from_secret(secret: Secret) -> ServingCert | None:
    data = secret.data or {}
    try:
        return ServingCert(*(base64.b64decode(data[k]) for k in (CA_KEY, CERT_KEY, KEY_KEY)))
    except (KeyError, ValueError):
        return None


async def ensure_serving_cert(
    client: AsyncClient, secret_name: str, namespace: str, hosts: list[str]
) -> ServingCert:
    """The certificate in the Secret, created or replaced when missing or unusable (a
    replica racing us wins: its write is read back)."""
    for _ in range(5):
        try:
            secret = await client.get(Secret, secret_name, namespace=namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise
            secret = None
        current = _from_secret(secret) if secret is not None else None
        if current is not None and usable(current, hosts):
            return current
        fresh = build_serving_cert(hosts)
        try:
            if secret is None:
                await client.create(
                    Secret(
                        metadata=ObjectMeta(
                            name=secret_name,
                            namespace=namespace,
                            labels={"app.kubernetes.io/name": "penetrator"},
                        ),
                        type="kubernetes.io/tls",
                        data=fresh.as_secret_data(),
                    )
                )
            else:
                await client.patch(
                    Secret,
                    secret_name,
                    {
                        "metadata": {"resourceVersion": secret.metadata.resourceVersion}
                        if secret.metadata
                        else {},
                        "data": fresh.as_secret_data(),
                    },
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
        except ApiError as e:
            if e.status.code == 409:  # another replica wrote first: use theirs
                continue
            raise
        return fresh
    raise RuntimeError(f"could not settle the webhook certificate in {namespace}/{secret_name}")


async def set_ca_bundle(
    client: AsyncClient, mutating: str, validating: str, ca_pem: bytes
) -> list[str]:
    """Write ``ca_pem`` into every webhook of the two configurations; the names of those
    missing (not deployed) are returned."""
    bundle = base64.b64encode(ca_pem).decode()
    missing: list[str] = []
    kinds: list[tuple[type[MutatingWebhookConfiguration | ValidatingWebhookConfiguration], str]]
    kinds = [(MutatingWebhookConfiguration, mutating), (ValidatingWebhookConfiguration, validating)]
    for kind, name in kinds:
        try:
            config = await client.get(kind, name)
        except ApiError as e:
            if e.status.code == 404:
                missing.append(name)
                continue
            raise
        ops = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            if w.clientConfig.caBundle is not None
            else {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            for i, w in enumerate(getattr(config, "webhooks", None) or [])
            if w.clientConfig.caBundle != bundle
        ]
        if ops:
            await client.patch(kind, name, ops, patch_type=PatchType.JSON)
    return missing
