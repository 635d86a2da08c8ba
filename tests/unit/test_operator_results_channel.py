"""The results channel: the job's writer (penetrator.job.report_api) against a
fake client, and the document model (penetrator.api.results)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightkube.core.exceptions import ApiError

from penetrator.api import MachinePhase
from penetrator.api.results import (
    MAX_RESULTS_BYTES,
    RESULTS_KEY,
    MachineResult,
    ResultsDoc,
)
from penetrator.job.report_api import ResultsWriter

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeCM:
    def __init__(self, data: dict[str, str] | None) -> None:
        self.data = data


class FakeClient:
    def __init__(self, doc: ResultsDoc | None, fail: int = 0) -> None:
        self.data = {RESULTS_KEY: doc.to_json()} if doc else None
        self.patches: list[dict[str, Any]] = []
        self.fail = fail

    async def get(self, res: Any, name: str, namespace: str | None = None) -> FakeCM:
        return FakeCM(self.data)

    async def patch(self, res: Any, name: str, body: dict[str, Any], **kw: Any) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise ApiError(
                response=_Resp(500, {"code": 500, "reason": "InternalError", "message": "x"})
            )
        self.patches.append(body)
        self.data = dict(body["data"])

    def doc(self) -> ResultsDoc:
        assert self.data is not None
        return ResultsDoc.from_json(self.data[RESULTS_KEY])


class _Resp:
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        self.status_code = code
        self._body = body

    def json(self) -> dict[str, Any]:
        return self._body


class R:
    def __init__(self, name: str, ip: str, phase: MachinePhase, error: str | None = None) -> None:
        self.name, self.ip, self.phase, self.error = name, ip, phase, error


def operator_doc() -> ResultsDoc:
    return ResultsDoc(
        round=2,
        started=T0,
        machines={
            "a": MachineResult(ip="10.0.0.1", attempts=2, round=2, error="old"),
            "b": MachineResult(ip="10.0.0.2", attempts=2, round=2),
            "z": MachineResult(ip="10.0.0.9", phase=MachinePhase.JOINED, attempts=1, round=1),
        },
    )


async def test_writer_keeps_the_operators_ledger_and_batches() -> None:
    client = FakeClient(operator_doc())
    w = ResultsWriter(client, "cm-results", interval=0, now=lambda: T0)  # type: ignore[arg-type]
    await w.start()
    w.record("a", "10.0.0.1", MachinePhase.CONNECTING)
    w.observe(R("a", "10.0.0.1", MachinePhase.FAILED, "Permission denied " * 30))
    w.observe(R("b", "10.0.0.2", MachinePhase.JOINED))
    assert client.patches == []  # nothing written before a flush
    assert await w.flush()
    assert len(client.patches) == 1
    doc = client.doc()
    assert (doc.round, doc.started, doc.done) == (2, T0, False)
    assert doc.machines["a"].phase is MachinePhase.FAILED
    assert doc.machines["a"].attempts == 2  # the operator's count, untouched
    assert len((doc.machines["a"].error or "").encode()) <= 200
    assert doc.machines["a"].updated == T0
    assert doc.machines["b"].phase is MachinePhase.JOINED
    assert doc.machines["z"] == operator_doc().machines["z"]  # not in this run: kept
    assert await w.flush()
    assert len(client.patches) == 1  # nothing new: no write
    await w.close(done=True)
    assert client.doc().done is True


async def test_failed_write_is_retried_and_never_raises() -> None:
    client = FakeClient(operator_doc(), fail=1)
    w = ResultsWriter(client, "cm-results", interval=0)  # type: ignore[arg-type]
    await w.start()
    w.record("a", "10.0.0.1", MachinePhase.INSTALLING)
    assert not await w.flush()
    assert w.failed_writes == 1
    assert await w.flush()
    assert client.doc().machines["a"].phase is MachinePhase.INSTALLING


async def test_writer_without_a_document_starts_empty() -> None:
    client = FakeClient(None)
    w = ResultsWriter(client, "cm-results", interval=0)  # type: ignore[arg-type]
    await w.start()
    w.record("n", "10.0.0.5", MachinePhase.JOINED)
    await w.close()
    doc = client.doc()
    assert doc.machines["n"].attempts == 1
    assert doc.done


def test_broken_document_reads_as_missing() -> None:
    assert ResultsDoc.from_configmap_data({RESULTS_KEY: "{not json"}) is None
    assert ResultsDoc.from_configmap_data({RESULTS_KEY: '{"round": -1}'}) is None
    assert ResultsDoc.from_configmap_data(None) is None
    with pytest.raises(ValueError, match="invalid at: round") as info:
        ResultsDoc.from_json('{"round": "secret-value"}')
    assert "secret-value" not in str(info.value)


@settings(max_examples=30, deadline=None)
@given(
    errors=st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=30),
    phase=st.sampled_from(list(MachinePhase)),
)
def test_document_round_trips_and_bounds_errors(errors: list[str], phase: MachinePhase) -> None:
    doc = ResultsDoc(
        round=1,
        started=T0,
        machines={
            f"m-{i}": MachineResult(ip=f"10.0.0.{i}", phase=phase, attempts=1, error=e)
            for i, e in enumerate(errors)
        },
    )
    again = ResultsDoc.from_json(doc.to_json())
    assert again == doc
    for m in again.machines.values():
        assert m.error is None or len(m.error.encode()) <= 200
        assert m.error is None or "\n" not in m.error


def test_5000_machines_fit_one_configmap() -> None:
    doc = ResultsDoc(
        round=3,
        started=T0,
        finished=T0,
        machines={
            f"edge-{i:06d}-abcdef": MachineResult(
                ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                phase=MachinePhase.FAILED,
                attempts=3,
                round=3,
                error="x" * 300,
                updated=T0,
            )
            for i in range(5000)
        },
    )
    text = doc.to_json()
    assert len(text) <= MAX_RESULTS_BYTES
    back = ResultsDoc.from_json(text)
    assert len(back.machines) == 5000
    assert sum(m.error is not None for m in back.machines.values()) >= 200
    assert json.loads(text)["round"] == 3
