"""Make sure a valid bootstrap token of ours exists (kube-system Secrets, found by
label selector, never by listing every Secret)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Final, cast

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

from penetrator.k8s.bootstrap_token import SECRET_TYPE, BootstrapToken, bootstrap_token_secret

TOKEN_NAMESPACE: Final = "kube-system"  # noqa: S105 - a namespace
TOKEN_LABELS: Final = {"app.kubernetes.io/managed-by": "penetrator"}
DESCRIPTION: Final = "penetrator: joins the machines of NodeTasks"


def _field(data: Mapping[str, str], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(value).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def token_from_secret(
    secret_type: str | None, data: Mapping[str, str] | None
) -> BootstrapToken | None:
    """The token a bootstrap-token Secret holds (``data`` base64 as the API returns it);
    None when it is not one or has no expiration."""
    if secret_type != SECRET_TYPE or not data:
        return None
    token_id, token_secret = _field(data, "token-id"), _field(data, "token-secret")
    expiration = _field(data, "expiration")
    if not token_id or not token_secret or not expiration:
        return None
    if _field(data, "usage-bootstrap-authentication") != "true":
        return None
    try:
        expires = dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return None
    if expires.tzinfo is None:
        return None
    return BootstrapToken(token_id, token_secret, expires)


def pick_token(
    tokens: Iterable[BootstrapToken], now: dt.datetime, margin: dt.timedelta
) -> BootstrapToken | None:
    """The valid token that lives longest, if it lives beyond ``now + margin``."""
    best: BootstrapToken | None = None
    for t in tokens:
        if t.expires > now + margin and (best is None or t.expires > best.expires):
            best = t
    return best


async def ensure_bootstrap_token(
    client: AsyncClient,
    now: dt.datetime,
    ttl: dt.timedelta = dt.timedelta(hours=24),
    margin: dt.timedelta = dt.timedelta(hours=2),
) -> BootstrapToken:
    """Reuse our longest-lived token when it outlives ``now + margin``; else create a
    new one valid for ``ttl`` (the token cleaner removes expired ones)."""
    found = []
    async for s in client.list(Secret, namespace=TOKEN_NAMESPACE, labels=dict(TOKEN_LABELS)):
        t = token_from_secret(s.type, s.data)
        if t is not None:
            found.append(t)
    best = pick_token(found, now, margin)
    if best is not None:
        return best
    token = BootstrapToken.generate(now, ttl)
    body = bootstrap_token_secret(token, DESCRIPTION, dict(TOKEN_LABELS))
    await client.create(cast(Secret, Secret.from_dict(body)))
    return token
