"""Per-machine results: JSON lines on stdout, a results file the operator reads
(rewritten atomically, throttled), and a live summary line on a terminal."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from penetrator.api import MachinePhase

RESULTS_VERSION = 1


@dataclass
class MachineResult:
    name: str
    ip: str
    phase: MachinePhase = MachinePhase.PENDING
    attempts: int = 0
    error: str | None = None  # short, credential-free
    durations: dict[str, float] = field(default_factory=dict)  # step -> seconds (summed)
    transferred: bool = False  # the package was sent in this run
    delivery: str | None = None  # how: "sftp" (pushed) or "http" (pulled from the job)
    skipped: bool = False  # already a Node with this task's label: nothing done
    host_key: str | None = None  # SHA256:... fingerprint seen
    arch: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = self.phase.value
        d["durations"] = {k: round(v, 3) for k, v in self.durations.items()}
        return d

    def add_time(self, step: str, seconds: float) -> None:
        self.durations[step] = self.durations.get(step, 0.0) + seconds


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


def write_results(
    path: Path, results: list[MachineResult], done: bool, warnings: list[str]
) -> None:
    doc = {
        "version": RESULTS_VERSION,
        "done": done,
        "summary": summary(results),
        "warnings": warnings,
        "machines": [r.to_dict() for r in results],
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
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
    ) -> None:
        self.sink = sink
        self.results = results
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

    def changed(self, r: MachineResult) -> None:
        if self.sink is not None:
            self.sink.observe(r)
        self._tick(final=False)

    def finished(self, r: MachineResult) -> None:
        if self.sink is not None:
            self.sink.observe(r)
        if self.out is not None:
            self.out.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
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
            write_results(self.results_path, self.results, done, self.warnings)
