"""The webhook's TLS rollover (``next_tls``, pure): a long-lived CA, serving
certificates renewed from it, the caBundle keeping every CA still in use."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from penetrator.k8s.webhook_tls import (
    CA_RENEW_BEFORE,
    CA_VALIDITY,
    RENEW_BEFORE,
    SERVING_VALIDITY,
    ServingCert,
    next_tls,
    service_hosts,
    usable,
)

HOSTS = service_hosts("penetrator-webhook", "edge-system")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def accepted(bundle: bytes, cert_pem: bytes, at: dt.datetime) -> bool:
    """What the API server does with a caBundle: some CA in it signed the certificate,
    and both are valid at ``at``."""
    leaf = x509.load_pem_x509_certificate(cert_pem)
    if not leaf.not_valid_before_utc <= at < leaf.not_valid_after_utc:
        return False
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, InvalidSignature):
            continue
        if ca.not_valid_before_utc <= at < ca.not_valid_after_utc:
            return True
    return False


def cas(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def first() -> ServingCert:
    made = next_tls(None, HOSTS, T0)
    assert made is not None
    return made


def test_nothing_yet_makes_a_ca_and_a_serving_certificate() -> None:
    made = first()
    assert len(cas(made.ca_pem)) == 1
    assert usable(made, HOSTS, T0)
    assert accepted(made.ca_pem, made.cert_pem, T0)
    assert cas(made.ca_pem)[0].not_valid_after_utc - T0 > CA_VALIDITY - dt.timedelta(hours=1)
    leaf = x509.load_pem_x509_certificate(made.cert_pem)
    assert leaf.not_valid_after_utc - T0 <= SERVING_VALIDITY


def test_a_good_secret_is_left_alone() -> None:
    made = first()
    assert (
        next_tls(made, HOSTS, T0 + SERVING_VALIDITY - RENEW_BEFORE - dt.timedelta(days=1)) is None
    )


def test_a_serving_certificate_near_its_end_is_renewed_from_the_same_ca() -> None:
    made = first()
    later = T0 + SERVING_VALIDITY - RENEW_BEFORE + dt.timedelta(days=1)
    renewed = next_tls(made, HOSTS, later)
    assert renewed is not None
    assert renewed.ca_pem == made.ca_pem  # the caBundle does not change
    assert renewed.ca_key_pem == made.ca_key_pem
    assert renewed.cert_pem != made.cert_pem
    # rollover: a replica still serving the old certificate and one serving the new
    # are both accepted by the same caBundle
    assert accepted(renewed.ca_pem, made.cert_pem, later)
    assert accepted(renewed.ca_pem, renewed.cert_pem, later)
    assert next_tls(renewed, HOSTS, later) is None


def test_other_names_get_a_new_serving_certificate_from_the_same_ca() -> None:
    made = first()
    other = service_hosts("other-webhook", "edge-system")
    renewed = next_tls(made, other, T0)
    assert renewed is not None
    assert renewed.ca_pem == made.ca_pem
    assert usable(renewed, other, T0)


def test_a_ca_near_its_end_goes_behind_a_new_one_and_both_are_accepted() -> None:
    made = first()
    late = T0 + CA_VALIDITY - CA_RENEW_BEFORE + dt.timedelta(days=1)
    # the serving certificate was renewed from the old CA until now
    old = next_tls(made, HOSTS, late - dt.timedelta(days=2))
    assert old is not None
    rotated = next_tls(old, HOSTS, late)
    assert rotated is not None
    bundle = cas(rotated.ca_pem)
    assert len(bundle) == 2
    assert bundle[1] == cas(made.ca_pem)[0]  # the old CA, behind the new one
    assert rotated.ca_key_pem != made.ca_key_pem
    assert accepted(rotated.ca_pem, old.cert_pem, late)  # replicas not yet switched
    assert accepted(rotated.ca_pem, rotated.cert_pem, late)
    assert next_tls(rotated, HOSTS, late) is None


def test_an_expired_ca_leaves_the_bundle() -> None:
    made = first()
    late = T0 + CA_VALIDITY - CA_RENEW_BEFORE + dt.timedelta(days=1)
    rotated = next_tls(made, HOSTS, late)
    assert rotated is not None
    after = T0 + CA_VALIDITY + dt.timedelta(days=1)
    trimmed = next_tls(rotated, HOSTS, after)
    assert trimmed is not None
    assert cas(trimmed.ca_pem) == cas(rotated.ca_pem)[:1]
    assert trimmed.ca_key_pem == rotated.ca_key_pem


def test_a_secret_without_the_ca_key_gets_a_new_ca_keeping_the_old_one() -> None:
    """A Secret from before the CA key was kept: the old CA stays accepted."""
    made = first()
    legacy = ServingCert(made.ca_pem, made.cert_pem, made.key_pem)
    upgraded = next_tls(legacy, HOSTS, T0)
    assert upgraded is not None
    assert len(cas(upgraded.ca_pem)) == 2
    assert accepted(upgraded.ca_pem, made.cert_pem, T0)
    assert accepted(upgraded.ca_pem, upgraded.cert_pem, T0)


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    made = first()
    late = T0 + CA_VALIDITY - dt.timedelta(days=10)  # past CA renewal: a new CA
    renewed = next_tls(made, HOSTS, late)
    assert renewed is not None
    leaf = x509.load_pem_x509_certificate(renewed.cert_pem)
    assert leaf.not_valid_after_utc <= cas(renewed.ca_pem)[0].not_valid_after_utc


def test_a_serving_certificate_of_another_ca_is_replaced() -> None:
    a, b = first(), first()
    mixed = ServingCert(a.ca_pem, b.cert_pem, b.key_pem, a.ca_key_pem)
    assert not usable(mixed, HOSTS, T0)
    fixed = next_tls(mixed, HOSTS, T0)
    assert fixed is not None
    assert fixed.ca_pem == a.ca_pem
    assert accepted(fixed.ca_pem, fixed.cert_pem, T0)
