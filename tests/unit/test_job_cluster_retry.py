"""The job's Kubernetes API retries, as pure logic: which answers are transient,
how long to wait (Retry-After, backoff, the step's budget), and the shared list
of wait_ready under failing lists. The clock and sleep are injected; requests
are callables raising the errors lightkube/httpx2 raise (the real API server's
answers are exercised in tests/e2e/test_job_cluster.py)."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
from lightkube.core.exceptions import ApiError

from penetrator.job.cluster import (
    ApiAnswer,
    Cluster,
    ClusterError,
    NodeInfo,
    RetryPolicy,
    classify,
    parse_retry_after,
)

URL = "https://127.0.0.1:6443/api/v1/nodes/edge-1"


def api_error(code: int, message: str = "", headers: dict[str, str] | None = None) -> ApiError:
    req = httpx2.Request("GET", URL)
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "message": message, "reason": "X"}  # fmt: skip
    resp = httpx2.Response(code, json=body, headers=headers or {}, request=req)
    return ApiError(request=req, response=resp)


def plain_error(code: int, headers: dict[str, str] | None = None) -> httpx2.HTTPStatusError:
    """A non-JSON answer (a proxy in front of the API server)."""
    req = httpx2.Request("GET", URL)
    resp = httpx2.Response(code, text="<html>bad gateway</html>", headers=headers, request=req)
    return httpx2.HTTPStatusError("bad", request=req, response=resp)


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_transient_status(code: int) -> None:
    a = classify(api_error(code, "try later"))
    assert a is not None
    assert a.transient
    assert a.code == code
    assert a.text.startswith(f"{code} ")
    assert a.text.endswith(": try later")
    p = classify(plain_error(code))
    assert p is not None
    assert p.transient
    assert p.code == code


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
def test_final_status(code: int) -> None:
    a = classify(api_error(code, 'nodes "edge-1" is forbidden'))
    assert a is not None
    assert not a.transient
    assert a.doubtful is (code in (401, 403))
    assert a.code == code
    assert 'nodes "edge-1" is forbidden' in a.text


def test_retry_after_only_where_it_means_something() -> None:
    a = classify(api_error(429, "slow down", {"Retry-After": "3"}))
    assert a is not None
    assert a.retry_after == 3
    b = classify(api_error(503, "", {"Retry-After": "2"}))
    assert b is not None
    assert b.retry_after == 2
    c = classify(api_error(500, "", {"Retry-After": "2"}))
    assert c is not None
    assert c.retry_after is None
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 7 ") == 7
    assert parse_retry_after("0") == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None  # backoff instead
    assert parse_retry_after("-1") is None
    assert parse_retry_after("nan") is None


def test_transport_errors() -> None:
    req = httpx2.Request("GET", URL)
    for exc in (
        httpx2.ConnectError("connection refused", request=req),
        httpx2.ReadTimeout("timed out", request=req),
        httpx2.ConnectTimeout("timed out", request=req),
        httpx2.RemoteProtocolError("peer closed connection", request=req),
        httpx2.ReadError("reset", request=req),
        TimeoutError(),
        ConnectionResetError("reset"),
    ):
        a = classify(exc)
        assert a is not None, exc
        assert a.transient, exc
        assert a.code is None
    unsupported = classify(httpx2.UnsupportedProtocol("ftp://", request=req))
    assert unsupported is not None
    assert not unsupported.transient
    # a certificate the job does not trust: retrying will not change it
    bad_cert = httpx2.ConnectError("verify failed", request=req)
    bad_cert.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    c = classify(bad_cert)
    assert c is not None
    assert not c.transient
    assert "certificate" in c.text
    # not an answer at all: a bug, propagated as it is
    assert classify(KeyError("x")) is None
    assert classify(ValueError("x")) is None


def test_policy_delay() -> None:
    p = RetryPolicy(base=0.5, cap=8, retry_after_max=30, floor=0.1)
    rng = random.Random(1)
    t = ApiAnswer(True, 503, "503")
    # backoff with jitter in [d/2, d], doubling, capped
    for tries, d in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (12, 8.0)]:
        got = p.delay(tries, t, 100, rng)
        assert got is not None
        assert d / 2 <= got <= d
    # Retry-After honoured, within bounds
    assert p.delay(1, ApiAnswer(True, 429, "429", 3), 100, rng) == 3
    assert p.delay(1, ApiAnswer(True, 429, "429", 120), 100, rng) == 30
    assert p.delay(1, ApiAnswer(True, 429, "429", 0), 100, rng) == 0.1  # no hot loop
    # a wait that does not fit in the budget: stop now
    assert p.delay(1, ApiAnswer(True, 429, "429", 5), 4.9, rng) is None
    assert p.delay(5, t, 3.0, rng) is None
    # final answers are never retried
    assert p.delay(1, ApiAnswer(False, 403, "403"), 100, rng) is None


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s
        await asyncio.sleep(0)


def cluster(ft: FakeTime, interval: float = 2.0, **kw: Any) -> Cluster:
    return Cluster(
        client=None,  # type: ignore[arg-type]  # no request reaches it in these tests
        interval=interval,
        clock=ft.clock,
        sleep=ft.sleep,
        rng=random.Random(0),
        **kw,
    )


def answers(*items: BaseException | str) -> Callable[[], Awaitable[str]]:
    """A request that raises each error in turn, then returns the value."""
    it = iter(items)

    async def request() -> str:
        x = next(it)
        if isinstance(x, BaseException):
            raise x
        return x

    return request


async def test_call_retries_transient_answers_then_succeeds() -> None:
    ft = FakeTime()
    c = cluster(ft)
    req = answers(api_error(503), api_error(429, "", {"Retry-After": "2"}), api_error(502), "ok")
    assert await c.call("label node edge-1", req, 60) == "ok"
    assert len(ft.sleeps) == 3
    assert ft.sleeps[1] == 2  # the server's Retry-After
    assert 0.25 <= ft.sleeps[0] <= 0.5


async def test_call_final_answer_is_not_retried() -> None:
    ft = FakeTime()
    c = cluster(ft)
    req = answers(api_error(422, 'Node "edge-1" is invalid: metadata.labels'), "ok")
    with pytest.raises(ClusterError) as e:
        await c.call("label node edge-1", req, 60)
    assert ft.sleeps == []
    assert e.value.tries == 1
    assert str(e.value) == (
        'Kubernetes API: label node edge-1 refused: 422 Unprocessable Content: Node "edge-1" '
        "is invalid: metadata.labels"
    )


async def test_call_forbidden_is_tried_a_few_times_then_final() -> None:
    """A 403 may be an API server that has just restarted (its RBAC cache not yet
    filled): tried ``doubtful_tries`` times, then final with the server's words."""
    ft = FakeTime()
    c = cluster(ft)
    forbidden = api_error(403, 'nodes "edge-1" is forbidden: User "x" cannot get')
    req = answers(*([forbidden] * 10))
    with pytest.raises(ClusterError) as e:
        await c.call("get node edge-1", req, 600)
    assert e.value.tries == RetryPolicy().doubtful_tries
    assert len(ft.sleeps) == RetryPolicy().doubtful_tries - 1
    assert "refused: 403 Forbidden" in str(e.value)


async def test_call_forbidden_then_served_succeeds() -> None:
    ft = FakeTime()
    c = cluster(ft)
    unauthorized = api_error(401, "Unauthorized")
    assert await c.call("get node edge-1", answers(unauthorized, unauthorized, "ok"), 60) == "ok"
    assert len(ft.sleeps) == 2


async def test_call_gives_up_when_the_budget_is_spent() -> None:
    ft = FakeTime()
    c = cluster(ft)
    t0 = ft.now
    req = answers(*[api_error(503, "etcd leader changed") for _ in range(100)])
    with pytest.raises(ClusterError) as e:
        await c.call("get node edge-1", req, 10)
    assert ft.now - t0 < 10  # never sleeps past the budget
    assert 3 <= e.value.tries < 100
    assert str(e.value).startswith(
        f"Kubernetes API: get node edge-1 still failing after {e.value.tries} tries in 10s: "
        "503 Service Unavailable: etcd leader changed"
    )


async def test_call_does_not_swallow_bugs() -> None:
    ft = FakeTime()
    with pytest.raises(KeyError):
        await cluster(ft).call("get node x", answers(KeyError("bug")), 10)
    assert ft.sleeps == []


class ListingCluster(Cluster):
    """Cluster whose one list request is a scripted sequence of answers."""

    def __init__(self, ft: FakeTime, script: list[BaseException | list[NodeInfo]]) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]
            interval=2.0, clock=ft.clock, sleep=ft.sleep, rng=random.Random(0),
        )  # fmt: skip
        self.script, self.ft = script, ft
        self.lists: list[float] = []

    async def list_nodes(self) -> list[NodeInfo]:
        self.lists.append(self.ft.now)
        x = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(x, BaseException):
            raise x
        return x


def ready(name: str) -> NodeInfo:
    return NodeInfo(name, ready=True)


async def test_wait_ready_rides_out_failing_lists_with_one_shared_list() -> None:
    ft = FakeTime()
    c = ListingCluster(
        ft,
        [api_error(503), api_error(429, "", {"Retry-After": "5"}), api_error(500),
         [ready(f"n{i}") for i in range(50)]],
    )  # fmt: skip
    got = await asyncio.gather(*(c.wait_ready(f"n{i}", 60) for i in range(50)))
    assert [n.name for n in got] == [f"n{i}" for i in range(50)]
    assert len(c.lists) == 4  # 50 waiters, one list at a time
    gaps = [b - a for a, b in zip(c.lists, c.lists[1:], strict=False)]
    assert all(g >= 2.0 for g in gaps)  # never more often than the interval
    assert gaps[1] >= 5.0  # the Retry-After was honoured by the shared list


async def test_wait_ready_timeout_says_the_lists_were_failing() -> None:
    ft = FakeTime()
    c = ListingCluster(ft, [api_error(503, "etcdserver: request timed out")])
    with pytest.raises(TimeoutError) as e:
        await c.wait_ready("edge-1", 30)
    assert "node edge-1 not registered after 30s (the last" in str(e.value)
    assert "503 Service Unavailable: etcdserver: request timed out" in str(e.value)
    assert len(c.lists) <= 30 / 2 + 1


async def test_wait_ready_final_list_answer_is_raised_to_every_waiter_once() -> None:
    ft = FakeTime()
    c = ListingCluster(ft, [api_error(403, "nodes is forbidden")])
    out = await asyncio.gather(*(c.wait_ready(f"n{i}", 60) for i in range(20)),
                               return_exceptions=True)  # fmt: skip
    assert all(isinstance(x, ClusterError) for x in out)
    assert "list nodes refused: 403 Forbidden: nodes is forbidden" in str(out[0])
    assert len(c.lists) == 1
    assert ft.sleeps == []


async def test_stale_by_address_waits_for_a_list_that_succeeded() -> None:
    ft = FakeTime()
    listed = [
        NodeInfo("other", addresses=("10.0.0.1",)),
        NodeInfo("edge-1", addresses=("10.0.0.1",)),
    ]
    c = ListingCluster(ft, [api_error(503), api_error(504), listed])
    assert await c.stale_by_address("edge-1", "10.0.0.1", "task", 30) == ["other"]
    assert len(c.lists) == 3
    # and gives up, naming the answer, when the lists keep failing past its budget
    ft2 = FakeTime()
    c2 = ListingCluster(ft2, [api_error(503, "overloaded")])
    with pytest.raises(ClusterError, match=r"list nodes still failing .*503 Service Unavailable"):
        await c2.stale_by_address("edge-1", "10.0.0.1", "task", 10)
    assert ft2.now - 1000.0 < 10


async def test_stale_same_name_only_without_the_task_label() -> None:
    ft = FakeTime()
    labelled = NodeInfo("mine", labels={"app.superedge.io/node-label": "task"}, ready=True)
    listed = [NodeInfo("old", ready=True), labelled]
    c = ListingCluster(ft, [api_error(503), listed])
    assert await c.stale_same_name("old", "task", 30)  # after the list that succeeded
    assert not await c.stale_same_name("mine", "task", 30)  # done already: never removed
    assert not await c.stale_same_name("new", "task", 30)
    assert len(c.lists) == 2  # one shared snapshot


async def test_wait_gone_until_a_list_lacks_the_node() -> None:
    ft = FakeTime()
    c = ListingCluster(ft, [[ready("old")], [ready("old")], api_error(503), [ready("other")]])
    await asyncio.gather(*(c.wait_gone("old", 60) for _ in range(10)))
    assert len(c.lists) == 4  # 10 waiters, one list at a time
    # a failed list is no proof the Node is gone
    ft2 = FakeTime()
    c2 = ListingCluster(ft2, [[ready("old")], api_error(503)])
    with pytest.raises(TimeoutError, match="node old still there after 20s"):
        await c2.wait_gone("old", 20)
    # a final refusal is said at once
    c3 = ListingCluster(FakeTime(), [api_error(403, "nodes is forbidden")])
    with pytest.raises(ClusterError, match="list nodes refused: 403"):
        await c3.wait_gone("old", 20)
