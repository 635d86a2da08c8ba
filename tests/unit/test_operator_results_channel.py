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

from penetrator.api import MachinePhase, NodeTask
from penetrator.api.jobconfig import Machine
from penetrator.api.results import (
    MAX_RESULTS_BYTES,
    RESULTS_KEY,
    MachineResult,
    ResultsDoc,
)
from penetrator.job.report import Reporter, run_results
from penetrator.job.report_api import ResultsWriter
from penetrator.k8s.builders import build_results_configmap

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FP = "SHA256:" + "A" * 43
FP2 = "SHA256:" + "B" * 43
TASK = NodeTask.from_dict(
    {
        "apiVersion": "nodetask.apps.superedge.io/v1beta1",
        "kind": "NodeTask",
        "metadata": {
            "name": "nodes",
            "uid": "u-1",
            "labels": {"app.superedge.io/node-label": "nodes-abcdef"},
            "annotations": {
                "app.superedge.io/job-name": "nodes-job",
                "app.superedge.io/configmap-name": "nodes-cm",
            },
        },
        "spec": {
            "nodeNamePrefix": "edge",
            "targetMachines": ["10.0.0.1"],
            "sshCredential": "login",
        },
    }
)


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


def operator_doc() -> ResultsDoc:
    return ResultsDoc(
        round=2,
        started=T0,
        machines={
            "a": MachineResult(ip="10.0.0.1", attempts=2, round=2, error="old", host_key=FP),
            "b": MachineResult(ip="10.0.0.2", attempts=2, round=2),
            "z": MachineResult(ip="10.0.0.9", phase=MachinePhase.JOINED, attempts=1, round=1),
        },
    )


def run_of(ledger: ResultsDoc, *names: str) -> list[MachineResult]:
    machines = [Machine(name=n, ip=ledger.machines[n].ip) for n in names]
    return run_results(ledger, machines)


async def test_writer_keeps_the_operators_ledger_and_batches() -> None:
    client = FakeClient(operator_doc())
    w = ResultsWriter(client, "cm-results", interval=0, now=lambda: T0)  # type: ignore[arg-type]
    ledger = await w.start()
    a, b = run_of(ledger, "a", "b")
    assert (a.attempts, a.round, a.host_key, a.error) == (2, 2, FP, None)
    a.phase = MachinePhase.CONNECTING
    w.observe(a)
    a.phase, a.error = MachinePhase.FAILED, "Permission denied " * 30
    a.add_time("connect", 1.5)
    w.observe(a)
    b.phase, b.host_key = MachinePhase.JOINED, FP2
    w.observe(b)
    assert client.patches == []  # nothing written before a flush
    assert await w.flush()
    assert len(client.patches) == 1
    doc = client.doc()
    assert (doc.round, doc.started, doc.updated, doc.done) == (2, T0, T0, False)
    assert doc.machines["a"].phase is MachinePhase.FAILED
    assert doc.machines["a"].attempts == 2  # the operator's count, untouched
    assert doc.machines["a"].host_key == FP  # the pin of an earlier round stays
    assert len((doc.machines["a"].error or "").encode()) <= 200
    assert doc.machines["a"].durations == {}  # the run's details stay out of the ledger
    assert doc.machines["b"].phase is MachinePhase.JOINED
    assert doc.machines["b"].host_key == FP2
    assert doc.machines["z"] == operator_doc().machines["z"]  # not in this run: kept
    assert await w.flush()
    assert len(client.patches) == 1  # nothing new: no write
    await w.close(done=True)
    assert client.doc().done is True


async def test_failed_write_is_retried_and_never_raises() -> None:
    client = FakeClient(operator_doc(), fail=1)
    w = ResultsWriter(client, "cm-results", interval=0)  # type: ignore[arg-type]
    (a,) = run_of(await w.start(), "a")
    a.phase = MachinePhase.INSTALLING
    w.observe(a)
    assert not await w.flush()
    assert w.failed_writes == 1
    assert await w.flush()
    assert client.doc().machines["a"].phase is MachinePhase.INSTALLING


async def test_writer_without_a_document_starts_empty() -> None:
    client = FakeClient(None)
    w = ResultsWriter(client, "cm-results", interval=0)  # type: ignore[arg-type]
    ledger = await w.start()
    (n,) = run_results(ledger, [Machine(name="n", ip="10.0.0.5")])
    n.phase = MachinePhase.JOINED
    w.observe(n)
    await w.close()
    doc = client.doc()
    assert doc.machines["n"].attempts == 1
    assert doc.done


_PHASES = st.sampled_from(list(MachinePhase))
_RESULTS = st.builds(
    MachineResult,
    ip=st.ip_addresses(v=4).map(str),
    phase=_PHASES,
    error=st.none() | st.text(max_size=300),
    host_key=st.none() | st.sampled_from([FP, FP2]),
    tries=st.integers(0, 5),
    arch=st.none() | st.sampled_from(["amd64", "arm64"]),
    transferred=st.booleans(),
    durations=st.dictionaries(
        st.sampled_from(["connect", "join"]), st.integers(0, 10**7).map(lambda ms: ms / 1000)
    ),
    warnings=st.lists(st.text(max_size=20), max_size=2),
)


@settings(max_examples=40, deadline=None)
@given(
    ledger=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), _RESULTS, max_size=8),
    run=st.lists(_RESULTS, max_size=8),
    done=st.booleans(),
)
def test_a_document_round_trips_job_to_configmap_to_operator(
    ledger: dict[str, MachineResult], run: list[MachineResult], done: bool
) -> None:
    """What the job writes (one type) is what the operator reads: the ConfigMap data
    the writer sends, parsed as the operator parses it, is the job's document without
    the run's details; the results file (details included) parses back whole."""
    base = ResultsDoc(round=3, started=T0, machines=ledger).ledger()  # as the job reads it
    results = run_results(base, [Machine(name=f"r{i}", ip=r.ip) for i, r in enumerate(run)])
    for mine, drawn in zip(results, run, strict=True):  # the job's run changes them
        for field in ("phase", "error", "host_key", "tries", "arch", "transferred"):
            setattr(mine, field, getattr(drawn, field))
        mine.durations, mine.warnings = dict(drawn.durations), list(drawn.warnings)
    writer = ResultsWriter(None, "cm-results", interval=0, now=lambda: T0)  # type: ignore[arg-type]
    writer.ledger = base
    for r in results:
        writer.observe(r)
    writer._done = done
    job_doc = writer.document()
    data = build_results_configmap(TASK, job_doc).data  # what goes to the API
    seen = ResultsDoc.from_configmap_data(data)  # what the operator's observe reads
    assert seen == job_doc.ledger()
    for r in results:
        assert seen.machines[r.name] == r.ledger()
        assert (
            seen.machines[r.name].error is None or len(seen.machines[r.name].error.encode()) <= 200
        )
    assert "durations" not in data[RESULTS_KEY]
    file_doc = Reporter(results, ledger=base).document(done)
    assert ResultsDoc.from_json(file_doc.to_json(details=True)) == file_doc
    assert file_doc.ledger().model_copy(update={"updated": T0}) == job_doc


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
        updated=T0,
        machines={
            f"edge-{i:06d}-abcdef": MachineResult(
                ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                phase=MachinePhase.FAILED,
                attempts=3,
                round=3,
                error="x" * 300,
                host_key=FP,
                durations={"connect": 0.123, "join": 12.5},
            )
            for i in range(5000)
        },
    )
    text = doc.to_json()
    assert len(text) <= MAX_RESULTS_BYTES
    back = ResultsDoc.from_json(text)
    assert len(back.machines) == 5000
    assert all(m.host_key == FP for m in back.machines.values())  # pins are never dropped
    assert sum(m.error is not None for m in back.machines.values()) >= 200
    assert json.loads(text)["round"] == 3


def test_the_longest_names_still_fit_the_api_servers_limit() -> None:
    """5,000 machines with 63-character names, all pinned: the errors go, every pin
    stays, and the ConfigMap stays under the API server's 1 MiB."""
    doc = ResultsDoc(
        round=99,
        started=T0,
        finished=T0,
        updated=T0,
        machines={
            f"{i:06d}".rjust(63, "e"): MachineResult(
                ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}".replace("10.", "100.", 1),
                phase=MachinePhase.TRANSFERRING,
                attempts=99,
                round=99,
                error="x" * 300,
                host_key=FP,
            )
            for i in range(5000)
        },
    )
    text = doc.to_json()
    assert len(RESULTS_KEY) + len(text) < 1024 * 1024
    back = ResultsDoc.from_json(text)
    assert all(m.host_key == FP for m in back.machines.values())
