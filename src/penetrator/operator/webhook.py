"""The admission webhook, served by the operator process (Kopf handlers; wiring only:
the decisions are ``penetrator.plan.admission``, the lookups ``penetrator.k8s.admission``).

``register(settings)`` registers the handlers and a start-up step that makes the
serving certificate (``penetrator.k8s.webhook_tls``), serves HTTPS on the settings'
``webhook.port`` and writes the CA into the caBundle of the chart's two webhook
configurations (``deploy/penetrator.yaml``), which call the handlers through the
Service ``edge-system/penetrator-webhook`` at ``/<handler id>``. Its settings are the
``webhook`` group of ``penetrator.api.settings.Settings``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from penetrator.api import GROUP, NAMESPACE, PLURAL, VERSION, NodeTaskSpec
from penetrator.api.settings import Settings, WebhookSettings
from penetrator.k8s.admission import (
    Requester,
    cluster_networks,
    credential_keys,
    list_tasks,
    missing_rights,
    node_exists,
    nodes_exist,
)
from penetrator.k8s.client import make_client
from penetrator.k8s.webhook_tls import ensure_serving_cert, service_hosts, set_ca_bundle
from penetrator.plan.admission import (
    CreateFacts,
    Denied,
    RecentAdmissions,
    mutate_create,
    parse_spec,
    rights_needed,
    rights_problems,
    task_base_name,
    validate_create,
    validate_update,
)

log = logging.getLogger(__name__)

MUTATE_CREATE = "mutate-create"
VALIDATE_CREATE = "validate-create"
VALIDATE_UPDATE = "validate-update"
RNG = random.SystemRandom()


API_TIMEOUT = 8.0
"""Seconds per API request: the API server gives the webhook 10 s."""
_settings: Settings | None = None
"""Set by ``register`` (never read at import)."""
_client: AsyncClient | None = None


def _webhook_settings() -> WebhookSettings:
    if _settings is None:
        raise RuntimeError("penetrator.operator.webhook.register(settings) comes first")
    return _settings.webhook


def _api() -> AsyncClient:
    global _client
    if _client is None:
        if _settings is None:
            raise RuntimeError("penetrator.operator.webhook.register(settings) comes first")
        _client = make_client(_settings.kubeconfig, _settings.context, timeout=API_TIMEOUT)
    return _client


class ServiceWebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS server with our certificate (no files on disk: memfd), keeping the
    configurations' caBundle in step with it each time it (re)starts serving. Every
    ``renew_check_seconds`` the Secret is looked at again: a serving certificate near
    its end is replaced there (same CA: the caBundle stays), written into the memfds,
    and Kopf (which re-reads its files every minute at most) restarts serving with it.
    When the CA itself was replaced, the new caBundle (new CA in front of the old one)
    is written before this replica serves a certificate of the new CA."""

    def __init__(self, settings: WebhookSettings, cert_pem: bytes, key_pem: bytes, ca: bytes):
        self._fds = [_memfd("webhook-cert", cert_pem), _memfd("webhook-key", key_pem)]
        super().__init__(
            addr="0.0.0.0",  # noqa: S104 (the Service's endpoint is the pod IP)
            port=settings.port,
            host=f"{settings.service}.{NAMESPACE}.svc",
            certfile=f"/proc/self/fd/{self._fds[0]}",
            pkeyfile=f"/proc/self/fd/{self._fds[1]}",
            cadata=ca,
            file_check_interval=min(60.0, settings.renew_check_seconds),
        )
        self.settings = settings
        self.ca = ca
        self._serving = cert_pem

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        renewer = asyncio.create_task(self._renew_forever())
        try:
            async for client_config in super().__call__(fn):
                await self._write_ca_bundle()
                yield client_config
        finally:
            renewer.cancel()

    async def _write_ca_bundle(self) -> None:
        try:
            missing = await set_ca_bundle(
                _api(), self.settings.configuration, self.settings.configuration, self.ca
            )
        except (ApiError, httpx2.HTTPError) as e:
            log.error("webhook caBundle not written: %s", _brief(e))
            return
        if missing:
            log.warning(
                "webhook configurations %s not found (install charts/penetrator or "
                "deploy/penetrator.yaml); serving anyway",
                ", ".join(missing),
            )
        else:
            log.info("webhook serving on :%d, caBundle up to date", self.settings.port)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_check_seconds)
            try:
                await self.renew()
            except (ApiError, httpx2.HTTPError, RuntimeError) as e:
                log.error("webhook certificate not checked: %s", _brief(e))

    async def renew(self) -> bool:
        """Load the Secret's certificate (replacing it there if due); True if it changed."""
        ws = self.settings
        cert = await ensure_serving_cert(
            _api(), ws.tls_secret, NAMESPACE, service_hosts(ws.service, NAMESPACE)
        )
        if cert.cert_pem == self._serving:
            return False
        if cert.ca_pem != self.ca:
            self.ca = self.cadata = cert.ca_pem
            await self._write_ca_bundle()
        for fd, data in zip(self._fds, (cert.cert_pem, cert.key_pem), strict=True):
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        self._serving = cert.cert_pem
        log.info("webhook certificate renewed; serving it within a minute")
        return True


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file (the key never touches a disk)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def _brief(e: BaseException) -> str:
    return f"API error {e.status.code}" if isinstance(e, ApiError) else type(e).__name__


async def webhook_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    ws = _webhook_settings()
    cert = await ensure_serving_cert(
        _api(), ws.tls_secret, NAMESPACE, service_hosts(ws.service, NAMESPACE)
    )
    settings.admission.server = ServiceWebhookServer(ws, cert.cert_pem, cert.key_pem, cert.ca_pem)
    settings.admission.managed = None  # the chart registers the webhooks


def _refuse(e: Denied | str) -> kopf.AdmissionError:
    return kopf.AdmissionError(str(e), code=400)


def _lookup_failed(what: str, e: Exception) -> kopf.AdmissionError:
    detail = f"API error {e.status.code}" if isinstance(e, ApiError) else type(e).__name__
    return kopf.AdmissionError(
        f"penetrator webhook: could not check {what} ({detail}); try again, or see the "
        "operator's log (kubectl -n edge-system logs deploy/penetrator-operator)",
        code=503,
    )


async def mutate_task(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **_: Any) -> None:
    lookups = by_label = 0
    budget = _webhook_settings().node_check_seconds

    async def exist(names: list[str]) -> set[str]:
        nonlocal lookups, by_label
        lookup = await nodes_exist(_api(), names, budget=budget)
        lookups += len(names)
        by_label += lookup.by_label
        return lookup.found

    started = time.monotonic()
    try:
        mutation = await mutate_create(_plain(body), exist, RNG)
    except Denied as e:
        raise _refuse(e) from None
    except (ApiError, httpx2.HTTPError, OSError, TimeoutError) as e:
        raise _lookup_failed("the generated node names against existing Nodes", e) from None
    patch.update(mutation.patch())  # a merge patch; Kopf turns it into a JSON patch
    log.info(
        "admission: task %s: %d node names generated (%d Node lookups, %d of them by "
        "hostname label) in %.2f s",
        task_base_name(_plain(body)) or "?",
        len(mutation.spec.get("nodeNamesOverride") or {}),
        lookups,
        by_label,
        time.monotonic() - started,
    )
    if by_label:
        warnings.append(
            f"{by_label} of the generated node names were checked against existing Nodes by "
            "their kubernetes.io/hostname label, not one by one (the API server was slow)"
        )


_recent = RecentAdmissions()
_admission_lock = asyncio.Lock()


async def validate_new_task(
    body: kopf.Body, dryrun: bool = False, userinfo: Mapping[str, Any] | None = None, **_: Any
) -> None:
    obj = _plain(body)
    try:
        spec: NodeTaskSpec = parse_spec(obj)
    except Denied as e:
        raise _refuse(e) from None
    client = _api()
    who = Requester.of(_plain(userinfo))
    try:
        keys = await credential_keys(client, spec.ssh_credential)
        proxy = await node_exists(client, spec.proxy_node) if spec.proxy_node else None
        cluster = await cluster_networks(client)
        missing = await missing_rights(client, who, rights_needed(spec, cluster))
    except (ApiError, httpx2.HTTPError, OSError, TimeoutError) as e:
        raise _lookup_failed("the credential Secret, the Nodes and your rights", e) from None
    # The requester's rights first: a task its author may not make says only that.
    if missing:
        raise _refuse(Denied(rights_problems(who.username, missing)))
    allow_cp = _webhook_settings().allow_control_plane_nodes
    async with _admission_lock:  # one decision on claims at a time in this process
        started = asyncio.get_running_loop().time()
        try:
            listed = await list_tasks(client)
        except (ApiError, httpx2.HTTPError, OSError, TimeoutError) as e:
            raise _lookup_failed("the other NodeTasks", e) from None
        now = asyncio.get_running_loop().time()
        tasks = _recent.with_listed(listed, started)
        facts = CreateFacts(keys, proxy, tasks, cluster, allow_cp)
        if problems := validate_create(obj, facts):
            raise _refuse(Denied(problems))
        if not dryrun:
            _recent.record(obj, now)


async def validate_changed_task(**kwargs: Any) -> None:
    old, new = kwargs.get("old"), kwargs.get("new")
    if old is None or new is None:
        return
    if problems := validate_update(_plain(old), _plain(new)):
        raise _refuse(Denied(problems))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_registered = False


def register(settings: Settings) -> None:
    """Register the start-up step and the three admission handlers with Kopf (once),
    served with ``settings`` (its ``webhook`` group and cluster access)."""
    global _registered, _settings
    _settings = settings
    if _registered:
        return
    _registered = True
    kopf.on.startup()(webhook_startup)
    kopf.on.mutate(GROUP, VERSION, PLURAL, id=MUTATE_CREATE, operations=["CREATE"])(mutate_task)
    kopf.on.validate(GROUP, VERSION, PLURAL, id=VALIDATE_CREATE, operations=["CREATE"])(
        validate_new_task
    )
    kopf.on.validate(GROUP, VERSION, PLURAL, id=VALIDATE_UPDATE, operations=["UPDATE"])(
        validate_changed_task
    )
