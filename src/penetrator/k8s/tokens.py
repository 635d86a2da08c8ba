"""Make sure a valid bootstrap token of ours exists, without reading kube-system.

The operator may only *create* Secrets in kube-system: reading them would mean
reading every token and service-account secret there. It keeps the token it made
in its own record, the Secret ``penetrator-bootstrap-token`` in its namespace, and
learns whether the token still exists from ``kube-public/cluster-info`` (which it
reads anyway): the bootstrap signer adds a ``jws-kubeconfig-<token id>`` key for
every valid signing token and removes it when the token is deleted or expires.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Final, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Secret

from penetrator.k8s.bootstrap_token import BootstrapToken, bootstrap_token_secret
from penetrator.k8s.clusterinfo import CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE

TOKEN_LABELS: Final = {"app.kubernetes.io/managed-by": "penetrator"}
DESCRIPTION: Final = "penetrator: joins the machines of NodeTasks"
RECORD_NAME: Final = "penetrator-bootstrap-token"
JWS_PREFIX: Final = "jws-kubeconfig-"
SIGNER_GRACE: Final = dt.timedelta(minutes=2)
"""A token this young counts as valid before its signature shows in cluster-info
(the bootstrap signer adds it a moment after the token's Secret appears). A Job may
get the token before it is signed: kubeadm's token discovery (and the sandbox's join)
retries until the signature appears, so no round waits for it."""
FIELD_MANAGER: Final = "penetrator-operator"


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def token_record(token: BootstrapToken, created: dt.datetime, namespace: str) -> Secret:
    """Our record of the token we made (a Secret: it holds the token)."""
    return Secret(
        apiVersion="v1",
        kind="Secret",
        type="Opaque",
        metadata=ObjectMeta(name=RECORD_NAME, namespace=namespace, labels=dict(TOKEN_LABELS)),
        data={
            "token-id": _b64(token.token_id),
            "token-secret": _b64(token.token_secret),
            "expiration": _b64(_rfc3339(token.expires)),
            "created": _b64(_rfc3339(created)),
        },
    )


def _time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def token_from_record(
    data: Mapping[str, str] | None,
) -> tuple[BootstrapToken, dt.datetime] | None:
    """(token, when it was made) from the record's ``data`` (base64, as the API returns
    it); None when it is absent or unusable."""
    fields: dict[str, str] = {}
    for key in ("token-id", "token-secret", "expiration", "created"):
        try:
            fields[key] = base64.b64decode((data or {})[key]).decode()
        except (KeyError, ValueError, UnicodeDecodeError):
            return None
    expires, created = _time(fields["expiration"]), _time(fields["created"])
    if expires is None or created is None or not fields["token-id"] or not fields["token-secret"]:
        return None
    return BootstrapToken(fields["token-id"], fields["token-secret"], expires), created


def still_valid(
    token: BootstrapToken,
    created: dt.datetime,
    cluster_info: Mapping[str, str] | None,
    now: dt.datetime,
    margin: dt.timedelta,
) -> bool:
    """The recorded token outlives ``now + margin`` and the cluster still has it: its
    signature is in cluster-info, or it is too young for the signer to have signed."""
    if token.expires <= now + margin:
        return False
    signed = f"{JWS_PREFIX}{token.token_id}" in (cluster_info or {})
    return signed or now - created < SIGNER_GRACE


async def _get_optional(
    client: AsyncClient, res: type[Secret] | type[ConfigMap], name: str, namespace: str
) -> Secret | ConfigMap | None:
    try:
        return await client.get(res, name, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return None
        raise


async def ensure_bootstrap_token(
    client: AsyncClient,
    now: dt.datetime,
    namespace: str,
    ttl: dt.timedelta = dt.timedelta(hours=24),
    margin: dt.timedelta = dt.timedelta(hours=2),
    field_manager: str = FIELD_MANAGER,
) -> BootstrapToken:
    """Reuse the recorded token while it is valid beyond ``now + margin``; else create
    a new one valid for ``ttl`` (the token cleaner removes expired ones) and record it.
    Two requests when the token is reused."""
    record = await _get_optional(client, Secret, RECORD_NAME, namespace)
    known = token_from_record(record.data) if record is not None else None
    if known is not None:
        info = await _get_optional(client, ConfigMap, CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE)
        if still_valid(*known, info.data if info is not None else None, now, margin):
            return known[0]
    token = BootstrapToken.generate(now, ttl)
    body = bootstrap_token_secret(token, DESCRIPTION, dict(TOKEN_LABELS))
    await client.create(cast(Secret, Secret.from_dict(body)))
    await client.apply(token_record(token, now, namespace), field_manager=field_manager, force=True)
    return token
