"""The API reads the admission webhook makes (few and bounded): Nodes by name, the
credential Secret's key names and value lengths (never the values themselves kept),
one list of NodeTasks; on create one paged list of Nodes (names, addresses, roles, Pod
networks: the cluster's own addresses and the Nodes a reinstall replaces) and of
ServiceCIDRs; SubjectAccessReviews for the requester's rights."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.operators import in_
from lightkube.resources.authorization_v1 import SubjectAccessReview
from lightkube.resources.core_v1 import Node, Secret
from lightkube.resources.networking_v1 import ServiceCIDR

from penetrator.api import NAMESPACE
from penetrator.k8s.client import NodeTaskResource
from penetrator.plan.addresses import CONTROL_PLANE_LABELS, ClusterNetworks, NodeFacts
from penetrator.plan.admission import Right

NODE_LOOKUP_CONCURRENCY = 64
HOSTNAME_LABEL = "kubernetes.io/hostname"
HOSTNAME_CHUNK = 200
NODE_PAGE = 500
"""Nodes per page of the one list on create."""
REVIEW_CONCURRENCY = 16


async def node_exists(client: AsyncClient, name: str) -> bool:
    try:
        await client.get(Node, name)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True


@dataclass
class NodeLookup:
    """Which names are Nodes; ``by_label``: how many were checked through the
    ``kubernetes.io/hostname`` label because the time budget for GETs ran out."""

    found: set[str] = field(default_factory=set)
    by_label: int = 0


async def nodes_exist(
    client: AsyncClient,
    names: list[str],
    *,
    budget: float | None = None,
    concurrency: int = NODE_LOOKUP_CONCURRENCY,
) -> NodeLookup:
    """Which of ``names`` are Nodes: one GET per name, ``concurrency`` at a time.

    Past ``budget`` seconds (an apiserver under load, thousands of names) the names
    not yet looked up are checked with a few LISTs by label selector
    ``kubernetes.io/hostname in (...)`` (the kubelet's label, the node name unless
    overridden), ``HOSTNAME_CHUNK`` names per request: never a list of all Nodes."""
    gate = asyncio.Semaphore(concurrency)
    result = NodeLookup()

    async def one(name: str) -> None:
        async with gate:
            if await node_exists(client, name):
                result.found.add(name)

    tasks = {asyncio.ensure_future(one(n)): n for n in names}
    if not tasks:
        return result
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if (e := t.exception()) is not None:
            raise e
    left = sorted(tasks[t] for t in pending)
    result.by_label = len(left)
    for i in range(0, len(left), HOSTNAME_CHUNK):
        chunk = left[i : i + HOSTNAME_CHUNK]
        async for node in client.list(Node, labels={HOSTNAME_LABEL: in_(chunk)}):
            if node.metadata and node.metadata.name:
                result.found.add(node.metadata.name)
            hostname = ((node.metadata.labels or {}) if node.metadata else {}).get(HOSTNAME_LABEL)
            if hostname:
                result.found.add(hostname)
    return result


async def credential_keys(
    client: AsyncClient, name: str, namespace: str = NAMESPACE
) -> dict[str, int] | None:
    """Key -> decoded length of the Secret's values; None if there is no such Secret."""
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return None
        raise
    keys: dict[str, int] = {}
    for key, value in (secret.data or {}).items():
        keys[key] = len(base64.b64decode(value or ""))
    for key, text in (secret.stringData or {}).items():  # never stored, but harmless
        keys[key] = len(text or "")
    return keys


async def list_tasks(client: AsyncClient) -> dict[str, dict[str, Any]]:
    """name -> body of every NodeTask (one list request, paged by the client)."""
    out: dict[str, dict[str, Any]] = {}
    async for task in client.list(NodeTaskResource):
        body: dict[str, Any] = task.to_dict()  # type: ignore[no-untyped-call]
        name = (body.get("metadata") or {}).get("name")
        if name:
            out[str(name)] = body
    return out


def node_facts(node: Node) -> NodeFacts:
    meta, spec, status = node.metadata, node.spec, node.status
    labels = (meta.labels if meta else None) or {}
    addresses = tuple(
        (a.type, a.address) for a in ((status.addresses if status else None) or []) if a.address
    )
    return NodeFacts(
        name=(meta.name if meta else None) or "",
        addresses=addresses,
        control_plane=any(key in labels for key in CONTROL_PLANE_LABELS),
        pod_cidrs=tuple((spec.podCIDRs if spec else None) or ()),
    )


async def cluster_networks(client: AsyncClient) -> ClusterNetworks:
    """The Nodes (one paged list) and the Service networks (ServiceCIDR objects; an
    API server without them, or no right to list them: none)."""
    nodes = [node_facts(n) async for n in client.list(Node, chunk_size=NODE_PAGE)]
    cidrs: list[str] = []
    try:
        async for sc in client.list(ServiceCIDR):
            cidrs += (sc.spec.cidrs if sc.spec else None) or []
    except ApiError as e:
        if e.status.code not in (403, 404):
            raise
    return ClusterNetworks.of(cidrs, nodes)


@dataclass(frozen=True)
class Requester:
    """Who sent the admission request (``request.userInfo``)."""

    username: str
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: Mapping[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, info: Mapping[str, Any] | None) -> Requester:
        info = info or {}
        extra = {str(k): [str(x) for x in v] for k, v in (info.get("extra") or {}).items()}
        return cls(
            str(info.get("username") or ""),
            info.get("uid") or None,
            tuple(str(g) for g in info.get("groups") or ()),
            extra,
        )


async def may(
    client: AsyncClient,
    who: Requester,
    verb: str,
    resource: str,
    name: str | None = None,
    namespace: str | None = None,
) -> bool:
    """Whether ``who`` may ``verb`` the ``resource`` (core group) ``name``: the API
    server's own answer (a SubjectAccessReview)."""
    review = SubjectAccessReview(
        spec=SubjectAccessReviewSpec(
            user=who.username,
            uid=who.uid,
            groups=list(who.groups),
            extra=dict(who.extra) or None,
            resourceAttributes=ResourceAttributes(
                group="", resource=resource, verb=verb, name=name, namespace=namespace
            ),
        )
    )
    answer = await client.create(review)
    return bool(answer.status is not None and answer.status.allowed)


async def missing_rights(
    client: AsyncClient, who: Requester, needed: Iterable[Right]
) -> list[Right]:
    """The rights of ``needed`` that ``who`` lacks. Node deletions are asked once for
    all Nodes first (an administrator: one review), then one by one."""
    needed = list(needed)
    nodes = [r for r in needed if r.resource == "nodes"]
    if nodes and await may(client, who, nodes[0].verb, "nodes"):
        needed = [r for r in needed if r.resource != "nodes"]
    gate = asyncio.Semaphore(REVIEW_CONCURRENCY)

    async def lacks(r: Right) -> bool:
        async with gate:
            return not await may(client, who, r.verb, r.resource, r.name, r.namespace)

    flags = await asyncio.gather(*(lacks(r) for r in needed))
    return [r for r, lack in zip(needed, flags, strict=True) if lack]
