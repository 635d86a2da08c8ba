"""operator.lease: two electors over one Lease (a fake API with resourceVersion
semantics): one holder at a time, takeover only after expiry, a stale write loses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease

from penetrator.operator.lease import LeaseElector


class _Resp:
    def __init__(self, code: int) -> None:
        self.status_code = code

    def json(self) -> dict[str, Any]:
        return {"code": self.status_code, "reason": "x", "message": "x"}


class FakeApi:
    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.version = 0

    async def get(self, res: Any, name: str, namespace: str | None = None) -> Lease:
        if self.lease is None:
            raise ApiError(response=_Resp(404))  # type: ignore[arg-type]
        return copy.deepcopy(self.lease)

    async def create(self, obj: Lease) -> Lease:
        if self.lease is not None:
            raise ApiError(response=_Resp(409))  # type: ignore[arg-type]
        self.version += 1
        obj.metadata.resourceVersion = str(self.version)
        self.lease = copy.deepcopy(obj)
        return obj

    async def replace(self, obj: Lease) -> Lease:
        assert self.lease is not None
        if obj.metadata.resourceVersion != self.lease.metadata.resourceVersion:
            raise ApiError(response=_Resp(409))  # type: ignore[arg-type]
        self.version += 1
        obj.metadata.resourceVersion = str(self.version)
        self.lease = copy.deepcopy(obj)
        return obj


def age_lease(api: FakeApi, seconds: float) -> None:
    assert api.lease is not None
    assert api.lease.spec is not None
    api.lease.spec.renewTime = datetime.now(UTC) - timedelta(seconds=seconds)


async def test_one_holder_and_takeover_after_expiry() -> None:
    api = FakeApi()
    a = LeaseElector(api, "l", "edge-system", "a", duration=15)  # type: ignore[arg-type]
    b = LeaseElector(api, "l", "edge-system", "b", duration=15)  # type: ignore[arg-type]
    assert await a.try_acquire()
    assert a.is_leader
    assert not await b.try_acquire()
    assert not b.is_leader
    assert await a.try_acquire()  # renew
    age_lease(api, 10)
    assert not await b.try_acquire()  # not expired yet
    age_lease(api, 20)
    assert await b.try_acquire()  # expired: b takes over
    assert api.lease is not None
    assert api.lease.spec is not None
    assert api.lease.spec.holderIdentity == "b"
    assert api.lease.spec.leaseTransitions == 1
    assert not await a.try_acquire()  # a sees b's fresh lease and steps down
    assert not a.is_leader


async def test_a_stale_write_loses_the_race() -> None:
    api = FakeApi()
    a = LeaseElector(api, "l", "edge-system", "a", duration=15)  # type: ignore[arg-type]
    b = LeaseElector(api, "l", "edge-system", "b", duration=15)  # type: ignore[arg-type]
    assert await a.try_acquire()
    age_lease(api, 30)
    real_get = api.get
    seen: list[Lease] = []

    async def get_then_interleave(res: Any, name: str, namespace: str | None = None) -> Lease:
        lease = await real_get(res, name, namespace)
        if not seen:
            seen.append(lease)
            assert await b.try_acquire()  # b writes between a's read and a's write
        return lease

    api.get = get_then_interleave  # type: ignore[method-assign]
    c = LeaseElector(api, "l", "edge-system", "c", duration=15)  # type: ignore[arg-type]
    assert not await c.try_acquire()  # its write carries the old resourceVersion
    assert b.is_leader
    assert not c.is_leader


async def test_leadership_lapses_without_renewal() -> None:
    api = FakeApi()
    a = LeaseElector(api, "l", "edge-system", "a", duration=3)  # type: ignore[arg-type]
    assert await a.try_acquire()
    a._valid_until -= 3  # as if two seconds passed without a renewal
    assert not a.is_leader
