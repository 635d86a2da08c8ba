"""Bootstrap tokens, as kubeadm makes them (pure builders, no I/O).

A token is `<id>.<secret>`; the apiserver authenticates it from a Secret of
type `bootstrap.kubernetes.io/token` in kube-system named `bootstrap-token-<id>`.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass
from typing import Any

TOKEN_ALPHABET = string.ascii_lowercase + string.digits
BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"
"""kubeadm's group: its clusters bind it to CSR creation *and* auto-approval of any
node name (``kubeadm:node-autoapprove-bootstrap``). The operator's tokens never
carry it (``task_token_groups``)."""
PENETRATOR_GROUP = "system:bootstrappers:penetrator"
"""Every penetrator token's group: the chart lets it create CSRs and read what a join
reads, never auto-approves its CSRs (the operator approves them, ``k8s.csr``)."""
SECRET_TYPE = "bootstrap.kubernetes.io/token"  # noqa: S105 - a type name, not a secret


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class BootstrapToken:
    token_id: str
    token_secret: str
    expires: dt.datetime

    @classmethod
    def generate(cls, now: dt.datetime, ttl: dt.timedelta) -> BootstrapToken:
        return cls(_random_chars(6), _random_chars(16), now + ttl)

    @property
    def value(self) -> str:
        return f"{self.token_id}.{self.token_secret}"

    def __repr__(self) -> str:  # never print the secret part
        return f"BootstrapToken(id={self.token_id!r}, expires={self.expires.isoformat()})"

    __str__ = __repr__


def task_group(task_uid: str) -> str:
    """The group that names one task's tokens (a CSR's requester carries it)."""
    return f"{PENETRATOR_GROUP}:{task_uid}"


def task_token_groups(task_uid: str) -> tuple[str, ...]:
    """A task's token: penetrator's group (may create CSRs) and the task's own."""
    return (PENETRATOR_GROUP, task_group(task_uid))


def token_username(token_id: str) -> str:
    """How the API server names a request made with the token ``token_id``."""
    return f"system:bootstrap:{token_id}"


def bootstrap_token_secret(
    token: BootstrapToken,
    description: str,
    labels: dict[str, str] | None = None,
    groups: tuple[str, ...] = (BOOTSTRAP_GROUP,),
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The kube-system Secret that makes `token` valid, with kubeadm's usages and
    ``groups`` (default: kubeadm's), owned by ``owner`` (an ownerReference) if given."""
    meta: dict[str, Any] = {
        "name": f"bootstrap-token-{token.token_id}",
        "namespace": "kube-system",
        "labels": dict(labels or {}),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": meta,
        "stringData": {
            "description": description,
            "token-id": token.token_id,
            "token-secret": token.token_secret,
            "expiration": token.expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": ",".join(groups),
        },
    }
