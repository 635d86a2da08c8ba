"""Per-machine results, as views of the one results document
(``penetrator.api.results``): JSON lines on stdout, a results file (rewritten
atomically, throttled), and a live summary line on a terminal."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Protocol

from penetrator.api import MachinePhase
from penetrator.api.jobconfig import Machine
from penetrator.api.results import MachineResult, ResultsDoc


def run_results(ledger: ResultsDoc, machines: Iterable[Machine]) -> list[MachineResult]:
    """A fresh result for each machine of a run, keeping what the ledger (the operator's
    document, or an empty one) knows of it: the rounds that tried it (this run counts
    as one when it knows none), the round and the pinned host key."""
    results: list[MachineResult] = []
    for m in machines:
        old = ledger.machines.get(m.name)
        results.append(
            MachineResult(
                name=m.name,
                ip=m.ip,
                attempts=old.attempts if old is not None else 1,
                round=old.round if old is not None else ledger.round,
                host_key=old.host_key if old is not None else None,
            )
        )
    return results


def summary(results: list[MachineResult]) -> dict[str, int]:
    c = Counter(r.phase.value for r in results)
    out = {p.value: c.get(p.value, 0) for p in MachinePhase}
    out["total"] = len(results)
    out["transferred"] = sum(1 for r in results if r.transferred)
    out["skipped"] = sum(1 for r in results if r.skipped)
    return out


def summary_line(results: list[MachineResult], elapsed: float) -> str:
    s = summary(results)
    busy = sum(
        s[p.value]
        for p in MachinePhase
        if p not in (MachinePhase.PENDING, MachinePhase.JOINED, MachinePhase.FAILED)
    )
    return (
        f"{s['joined']}/{s['total']} joined, {s['failed']} failed, {busy} in progress, "
        f"{s['pending']} pending ({elapsed:.0f}s)"
    )


def write_results(path: Path, doc: ResultsDoc) -> None:
    """The document with the run's details (``to_json(details=True)``), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(doc.to_json(details=True) + "\n")
    os.replace(tmp, path)


class ResultSink(Protocol):
    """Where else results go (``report_api.ResultsWriter``: the task's results ConfigMap)."""

    def observe(self, result: MachineResult) -> None: ...


class Reporter:
    """Receives phase changes and finished machines."""

    def __init__(
        self,
        results: list[MachineResult],
        out: IO[str] | None = None,
        results_path: Path | None = None,
        live: Callable[[str], None] | None = None,
        throttle: float = 2.0,
        sink: ResultSink | None = None,
        ledger: ResultsDoc | None = None,
    ) -> None:
        self.sink = sink
        self.results = results
        self.ledger = ledger or ResultsDoc()
        self.out = out
        self.results_path = results_path
        self.live = live
        self.throttle = throttle
        self.warnings: list[str] = []
        self._t0 = time.monotonic()
        self._last_write = 0.0

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.out is not None:
            self.out.write(json.dumps({"warning": text}) + "\n")
            self.out.flush()

    def document(self, done: bool) -> ResultsDoc:
        """The ledger with this run's results (and warnings) in it."""
        doc = self.ledger.with_results(self.results)
        return doc.model_copy(update={"done": done, "warnings": list(self.warnings)})

    def changed(self, r: MachineResult) -> None:
        if self.sink is not None:
            self.sink.observe(r)
        self._tick(final=False)

    def finished(self, r: MachineResult) -> None:
        if self.sink is not None:
            self.sink.observe(r)
        if self.out is not None:
            self.out.write(r.line() + "\n")
            self.out.flush()
        self._tick(final=False)

    def close(self) -> None:
        self._tick(final=True)

    def _tick(self, final: bool) -> None:
        now = time.monotonic()
        if self.live is not None:
            self.live(summary_line(self.results, now - self._t0))
        if self.results_path is not None and (final or now - self._last_write >= self.throttle):
            self._last_write = now
            done = final and all(r.phase.finished for r in self.results)
            write_results(self.results_path, self.document(done))
