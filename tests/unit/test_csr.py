"""k8s.csr: which kubelet CSRs the operator approves (a table of cases, pure)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from penetrator.k8s.bootstrap_token import BOOTSTRAP_GROUP, task_token_groups
from penetrator.k8s.csr import (
    KUBELET_CLIENT_SIGNER,
    CsrFacts,
    TaskFacts,
    approved,
    csr_facts,
    csr_verdict,
    requested_node,
)

UID = "0b7e8f52-1111-4c2b-9d2e-5a3c2f6a9e01"
TASK = TaskFacts("nodes", UID, "abc123", frozenset({"edge-a", "edge-b"}))
KEY = ec.generate_private_key(ec.SECP256R1())


def request(
    cn: str = "system:node:edge-a", org: str | None = "system:nodes", san: bool = False
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if san:
        names = [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def facts(**over: Any) -> CsrFacts:
    base: dict[str, Any] = {
        "name": "node-csr-x",
        "signer": KUBELET_CLIENT_SIGNER,
        "username": "system:bootstrap:abc123",
        "groups": ("system:bootstrappers", *task_token_groups(UID), "system:authenticated"),
        "usages": ("digital signature", "client auth"),
        "request": request(),
        "decided": False,
    }
    base.update(over)
    return CsrFacts(**base)


def test_a_planned_node_of_the_tasks_token_is_approved() -> None:
    v = csr_verdict(facts(), TASK)
    assert v is not None
    assert v.approve
    assert v.node == "edge-a"
    v = csr_verdict(facts(usages=("digital signature", "key encipherment", "client auth")), TASK)
    assert v is not None
    assert v.approve


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"request": request("system:node:control-plane")}, "not in task nodes's plan"),
        ({"username": "system:bootstrap:other1"}, "is not task nodes's token"),
        ({"request": request("system:node:edge-a", org="system:masters")}, "O is"),
        ({"request": request("system:node:edge-a", org=None)}, "O is"),
        ({"request": request("edge-a")}, "CN is"),
        ({"request": request(san=True)}, "subject alternative names"),
        ({"request": b"not a csr"}, "not a PEM"),
        ({"usages": ("client auth", "server auth")}, "usages"),
        ({"usages": ("digital signature",)}, "usages"),
    ],
)
def test_anything_else_of_a_task_is_left_pending(over: dict[str, Any], reason: str) -> None:
    v = csr_verdict(facts(**over), TASK)
    assert v is not None
    assert not v.approve
    assert reason in v.reason


def test_a_task_without_token_or_unknown_approves_nothing() -> None:
    no_token = TaskFacts("nodes", UID, None, TASK.plan)
    v = csr_verdict(facts(), no_token)
    assert v is not None
    assert not v.approve
    v = csr_verdict(facts(), None)
    assert v is not None
    assert not v.approve
    assert UID in v.reason
    other = TaskFacts("other", "another-uid", "abc123", TASK.plan)
    v = csr_verdict(facts(), other)
    assert v is not None
    assert not v.approve


@pytest.mark.parametrize(
    "over",
    [
        {"signer": "kubernetes.io/kubelet-serving"},
        {"groups": ("system:bootstrappers", BOOTSTRAP_GROUP)},  # kubeadm's: not ours
        {"groups": ("system:bootstrappers:penetrator:a", "system:bootstrappers:penetrator:b")},
        {"decided": True},
    ],
)
def test_csrs_of_no_task_or_decided_are_not_ours(over: dict[str, Any]) -> None:
    assert csr_verdict(facts(**over), TASK) is None


def test_facts_from_a_csr_body_and_the_approval() -> None:
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-1"},
        "spec": {
            "signerName": KUBELET_CLIENT_SIGNER,
            "username": "system:bootstrap:abc123",
            "groups": list(task_token_groups(UID)),
            "usages": ["client auth"],
            "request": base64.b64encode(request()).decode(),
        },
        "status": {"conditions": [{"type": "Denied", "status": "True"}]},
    }
    f = csr_facts(body)
    assert (f.name, f.decided, requested_node(f.request)) == ("node-csr-1", True, "edge-a")
    from lightkube.resources.certificates_v1 import CertificateSigningRequest

    body["status"] = {}
    csr = CertificateSigningRequest.from_dict(body)
    out = approved(csr, "penetrator: node edge-a", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    (cond,) = out["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "Approved",
        "True",
        "PenetratorApproved",
    )
    assert not csr_facts(body).decided
