"""Which kubelet CSRs the operator approves (pure), and approving one (I/O).

A machine joins with its task's bootstrap token, whose groups are penetrator's
and the task's own (``k8s.bootstrap_token.task_token_groups``); kubeadm's
auto-approval (``system:bootstrappers:kubeadm:default-node-token``) does not
apply to them. The operator approves a CSR only when all of these hold:

* the signer is ``kubernetes.io/kube-apiserver-client-kubelet``;
* the requester carries exactly one task's group and *is* that task's current
  token (``system:bootstrap:<token id>``);
* the request names ``system:node:<name>`` in organisation ``system:nodes``, with
  no other name (no SAN), and ``name`` is in that task's plan;
* it asks for client-auth usages only.

Anything else is left alone (a CSR of no task of ours) or left pending with the
reason logged: the operator never approves a name its task did not plan.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from cryptography import x509
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient
from lightkube.resources.certificates_v1 import (
    CertificateSigningRequest,
    CertificateSigningRequestApproval,
)

from penetrator.k8s.bootstrap_token import PENETRATOR_GROUP, token_username

KUBELET_CLIENT_SIGNER: Final = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_USER_PREFIX: Final = "system:node:"
NODES_GROUP: Final = "system:nodes"
ALLOWED_USAGES: Final = frozenset({"client auth", "digital signature", "key encipherment"})
APPROVED_REASON: Final = "PenetratorApproved"


@dataclass(frozen=True)
class CsrFacts:
    """What the decision reads of one CSR (``csr_facts``)."""

    name: str
    signer: str
    username: str
    groups: tuple[str, ...]
    usages: tuple[str, ...]
    request: bytes  # PEM
    decided: bool  # already Approved, Denied or Failed


@dataclass(frozen=True)
class TaskFacts:
    """What the decision reads of the task whose group the requester carries."""

    name: str
    uid: str
    token_id: str | None  # the task's current token; None: it has none
    plan: frozenset[str]  # the node names it plans


@dataclass(frozen=True)
class Verdict:
    approve: bool
    node: str | None  # the node name asked for (when readable)
    reason: str


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def csr_facts(csr: Any) -> CsrFacts:
    """From a CSR as a dict (a Kopf body) or a lightkube model."""
    meta, spec, status = _get(csr, "metadata"), _get(csr, "spec"), _get(csr, "status")
    request = _get(spec, "request") or ""
    conditions = (_get(status, "conditions") if status is not None else None) or []
    decided = any(
        _get(c, "type") in ("Approved", "Denied", "Failed") and _get(c, "status") != "False"
        for c in conditions
    )
    return CsrFacts(
        name=str(_get(meta, "name") or ""),
        signer=str(_get(spec, "signerName") or ""),
        username=str(_get(spec, "username") or ""),
        groups=tuple(_get(spec, "groups") or ()),
        usages=tuple(_get(spec, "usages") or ()),
        request=base64.b64decode(request) if isinstance(request, str) else bytes(request),
        decided=decided,
    )


def task_uid_of(facts: CsrFacts) -> str | None:
    """The task whose group the requester carries (None: none, or more than one)."""
    prefix = PENETRATOR_GROUP + ":"
    uids = {g[len(prefix) :] for g in facts.groups if g.startswith(prefix)}
    return uids.pop() if len(uids) == 1 else None


def requested_node(request_pem: bytes) -> str:
    """The node name a kubelet client CSR asks for; ValueError saying what is wrong."""
    try:
        req = x509.load_pem_x509_csr(request_pem)
    except ValueError:
        raise ValueError("the request is not a PEM certificate request") from None
    if not req.is_signature_valid:
        raise ValueError("the request's signature is invalid")
    cns = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = [str(o.value) for o in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    cn = str(cns[0].value) if len(cns) == 1 else ""
    if not cn.startswith(NODE_USER_PREFIX) or len(cn) == len(NODE_USER_PREFIX):
        raise ValueError(f"the subject's CN is {cn!r}, not system:node:<name>")
    if orgs != [NODES_GROUP]:
        raise ValueError(f"the subject's O is {orgs}, not [{NODES_GROUP}]")
    try:
        req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return cn[len(NODE_USER_PREFIX) :]
    raise ValueError("the request carries subject alternative names")


def csr_verdict(facts: CsrFacts, task: TaskFacts | None) -> Verdict | None:
    """Approve or leave pending (with the reason); None when the CSR is none of ours
    (another signer, no task's group) or already decided."""
    if facts.signer != KUBELET_CLIENT_SIGNER or facts.decided:
        return None
    uid = task_uid_of(facts)
    if uid is None:
        return None
    if task is None or task.uid != uid:
        return Verdict(False, None, f"no task has uid {uid}")
    if task.token_id is None or facts.username != token_username(task.token_id):
        return Verdict(False, None, f"requester {facts.username} is not task {task.name}'s token")
    try:
        node = requested_node(facts.request)
    except ValueError as e:
        return Verdict(False, None, str(e))
    if node not in task.plan:
        return Verdict(False, node, f"node {node} is not in task {task.name}'s plan")
    usages = set(facts.usages)
    if "client auth" not in usages or not usages <= ALLOWED_USAGES:
        return Verdict(False, node, f"usages {sorted(usages)} are not a kubelet client's")
    return Verdict(True, node, f"node {node} of task {task.name}")


def approved(csr: CertificateSigningRequest, message: str, now: datetime) -> dict[str, Any]:
    """The CSR as a dict with an Approved condition added (for the approval subresource)."""
    body = csr.to_dict()
    status = body.setdefault("status", {})
    status.setdefault("conditions", []).append(
        {
            "type": "Approved",
            "status": "True",
            "reason": APPROVED_REASON,
            "message": message,
            "lastUpdateTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    return body


async def approve(client: AsyncClient, csr: CertificateSigningRequest, message: str) -> None:
    """Add the Approved condition to ``csr`` as read (its resourceVersion: a CSR
    changed meanwhile is a 409, the caller's cue to read it again)."""
    name = csr.metadata.name if csr.metadata is not None else None
    if not name:
        raise ValueError("the CSR has no name")
    body = approved(csr, message, datetime.now(UTC))
    obj = cast(CertificateSigningRequestApproval, CertificateSigningRequestApproval.from_dict(body))
    await client.replace(obj, name)
