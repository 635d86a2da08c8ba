"""The webhook's TLS: a long-lived CA and short-lived serving certificates, made at
run time, never shipped.

One Secret (``edge-system/penetrator-webhook-tls``) keeps them so that every replica
behind the Service serves the same certificate: ``ca.crt`` (the caBundle: the current
CA first, then an older CA while it is still valid), ``ca.key``, ``tls.crt``,
``tls.key``. The first replica creates it, the others read it.

Rollover without a moment of refusal (``next_tls`` decides, pure):

* a **serving certificate** lives ``SERVING_VALIDITY`` and is renewed in its last
  ``RENEW_BEFORE``, or at once for other names: signed by the same CA, so the caBundle
  does not change and the API server accepts the old certificate (still valid) and the
  new one alike while replicas switch over;
* the **CA** lives ``CA_VALIDITY`` and is replaced in its last ``CA_RENEW_BEFORE``
  (or when its key is missing, e.g. a Secret from before the key was kept): the new
  CA goes *in front of* the old one in the caBundle, which keeps the old one until it
  expires, so certificates of either CA are accepted.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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

CA_VALIDITY = dt.timedelta(days=3650)
CA_RENEW_BEFORE = dt.timedelta(days=365)
SERVING_VALIDITY = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)
VALIDITY = SERVING_VALIDITY  # the serving certificate's (the name the tests used)
BACKDATE = dt.timedelta(minutes=5)  # clocks of the API server and ours differ a little
CA_KEY = "ca.crt"
CA_PRIVATE_KEY = "ca.key"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
CA_NAME = "penetrator-webhook-ca"


@dataclass(frozen=True)
class ServingCert:
    ca_pem: bytes
    """The caBundle: one or more CA certificates, the current (signing) one first."""
    cert_pem: bytes
    key_pem: bytes
    ca_key_pem: bytes = b""
    """The current CA's key (empty: unknown, so the CA is replaced at the next look)."""

    def as_secret_data(self) -> dict[str, str]:
        data = {CA_KEY: self.ca_pem, CERT_KEY: self.cert_pem, KEY_KEY: self.key_pem}
        if self.ca_key_pem:
            data[CA_PRIVATE_KEY] = self.ca_key_pem
        return {k: base64.b64encode(v).decode() for k, v in data.items()}


def service_hosts(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc"]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def build_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh CA (P-256), valid ``CA_VALIDITY``; its name carries its start, so the
    certificates of two CAs in one bundle are never confused."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(int(now.timestamp()))),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return ca, key


def sign_serving(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str], now: dt.datetime
) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` from ``ca`` (PEM certificate, PEM key), valid
    ``SERVING_VALIDITY`` and never beyond the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[-1])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVING_VALIDITY, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(cert), _pem_key(key)


def build_serving_cert(hosts: list[str], now: dt.datetime | None = None) -> ServingCert:
    """A fresh CA and a serving certificate for ``hosts`` signed by it."""
    now = now or dt.datetime.now(dt.UTC)
    ca, ca_key = build_ca(now)
    cert_pem, key_pem = sign_serving(ca, ca_key, hosts, now)
    return ServingCert(_pem(ca), cert_pem, key_pem, _pem_key(ca_key))


def _ca_of(cert: ServingCert) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The bundle's first CA with its key, if the key is there and is that CA's."""
    try:
        ca = x509.load_pem_x509_certificates(cert.ca_pem)[0]
        key = serialization.load_pem_private_key(cert.ca_key_pem, password=None)
    except (ValueError, TypeError, IndexError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != ca.public_key():
        return None
    return ca, key


def usable(cert: ServingCert, hosts: list[str], now: dt.datetime | None = None) -> bool:
    """The serving certificate is signed by the bundle's first CA, matches its key and
    is valid for ``hosts`` for at least ``RENEW_BEFORE`` more."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        leaf = x509.load_pem_x509_certificate(cert.cert_pem)
        ca = x509.load_pem_x509_certificates(cert.ca_pem)[0]
        key = serialization.load_pem_private_key(cert.key_pem, password=None)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, IndexError, x509.ExtensionNotFound, InvalidSignature):
        return False  # unreadable, or signed by another CA
    return (
        key.public_key() == leaf.public_key()
        and leaf.not_valid_after_utc - now > RENEW_BEFORE
        and set(hosts) <= set(sans.get_values_for_type(x509.DNSName))
    )


def still_valid_cas(bundle: bytes, now: dt.datetime) -> list[x509.Certificate]:
    """The CAs of a bundle that have not expired (an unreadable bundle: none)."""
    try:
        cas = x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []
    return [c for c in cas if c.not_valid_after_utc > now]


def next_tls(current: ServingCert | None, hosts: list[str], now: dt.datetime) -> ServingCert | None:
    """What the Secret should hold next, or None when it is fine as it is (see the
    module doc): a new serving certificate from the same CA, or a new CA in front of
    the bundle's still valid ones."""
    if current is None:
        return build_serving_cert(hosts, now)
    ca = _ca_of(current)
    if ca is None or ca[0].not_valid_after_utc - now <= CA_RENEW_BEFORE:
        fresh = build_serving_cert(hosts, now)
        older = still_valid_cas(current.ca_pem, now)
        bundle = fresh.ca_pem + b"".join(_pem(c) for c in older)
        return ServingCert(bundle, fresh.cert_pem, fresh.key_pem, fresh.ca_key_pem)
    bundle = b"".join(_pem(c) for c in still_valid_cas(current.ca_pem, now))
    if usable(current, hosts, now) and bundle == current.ca_pem:
        return None
    cert_pem, key_pem = sign_serving(ca[0], ca[1], hosts, now)
    return ServingCert(bundle, cert_pem, key_pem, current.ca_key_pem)


def _from_secret(secret: Secret) -> ServingCert | None:
    data = secret.data or {}
    try:
        ca, cert, key = (base64.b64decode(data[k]) for k in (CA_KEY, CERT_KEY, KEY_KEY))
        return ServingCert(ca, cert, key, base64.b64decode(data.get(CA_PRIVATE_KEY, "")))
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
        fresh = next_tls(current, hosts, dt.datetime.now(dt.UTC))
        if fresh is None and current is not None:
            return current
        fresh = fresh or build_serving_cert(hosts)
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
