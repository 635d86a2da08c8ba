"""How a task is shown: a summary of its status (pure), a rich live view for a
terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

PHASES = ("pending", "connecting", "transferring", "installing", "joining", "joined", "failed")
PHASE_STYLE = {
    "pending": "dim",
    "connecting": "cyan",
    "transferring": "blue",
    "installing": "magenta",
    "joining": "yellow",
    "joined": "green",
    "failed": "red",
}
MAX_FAILURES_SHOWN = 10


@dataclass(frozen=True)
class Failure:
    name: str
    ip: str
    attempts: int
    error: str


@dataclass(frozen=True)
class Progress:
    name: str
    phase: str  # creating | ready | failed | "" (the operator has not looked yet)
    planned: int
    joined: int
    failed: int
    by_phase: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    created: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("ready", "failed")

    def elapsed(self, now: datetime | None = None) -> float:
        if self.created is None:
            return 0.0
        return max(0.0, ((now or datetime.now(UTC)) - self.created).total_seconds())

    def rate(self, now: datetime | None = None) -> float:
        """Machines joined per minute since the task was created."""
        seconds = self.elapsed(now)
        return self.joined * 60 / seconds if seconds > 0 else 0.0


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def progress_of(body: Mapping[str, Any]) -> Progress:
    """The summary of a NodeTask as the API returns it (hostile-safe)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    plan = spec.get("nodeNamesOverride") or {}
    planned = _int(status.get("planned")) or len(plan) or len(set(spec.get("targetMachines") or []))
    joined, failed = _int(status.get("joined")), _int(status.get("failed"))
    machines = status.get("machines") or {}
    by_phase = dict.fromkeys(PHASES, 0)
    failures: list[Failure] = []
    for name, m in sorted(machines.items()) if isinstance(machines, Mapping) else []:
        if not isinstance(m, Mapping):
            continue
        phase = str(m.get("phase") or "pending")
        by_phase[phase] = by_phase.get(phase, 0) + 1
        if phase == "failed" or m.get("lastError"):
            failures.append(
                Failure(
                    str(name),
                    str(plan.get(name, "")),
                    _int(m.get("attempts")),
                    str(m.get("lastError") or ""),
                )
            )
    by_phase["joined"] = joined
    by_phase["failed"] = max(by_phase["failed"], failed)
    untried = planned - sum(by_phase.values())
    by_phase["pending"] += max(0, untried)
    failures.sort(key=lambda f: (not f.error, f.name))
    return Progress(
        name=str(meta.get("name") or ""),
        phase=str(status.get("nodetaskStatus") or ""),
        planned=planned,
        joined=joined,
        failed=failed,
        by_phase=by_phase,
        failures=failures,
        created=_time(meta.get("creationTimestamp")),
    )


def duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def phase_counts(p: Progress) -> str:
    return ", ".join(f"{n} {ph}" for ph in PHASES if (n := p.by_phase.get(ph, 0)))


def plain_line(p: Progress, now: datetime | None = None) -> str:
    """One line for logs and pipes."""
    stamp = (now or datetime.now(UTC)).strftime("%H:%M:%S")
    return (
        f"{stamp} nodetask/{p.name} {p.phase or 'waiting'}: {p.joined}/{p.planned} joined, "
        f"{p.failed} failed ({phase_counts(p) or 'nothing planned yet'}); "
        f"elapsed {duration(p.elapsed(now))}, {p.rate(now):.1f}/min"
    )


def failure_line(f: Failure) -> str:
    where = f"{f.name} ({f.ip})" if f.ip else f.name
    return f"  failed {where} after {f.attempts} attempt(s): {f.error or 'no error recorded'}"


def render(
    p: Progress, events: list[str] | None = None, now: datetime | None = None
) -> RenderableType:
    """The live view: header, bar, phases, failures, recent events."""
    style = {"ready": "bold green", "failed": "bold red"}.get(p.phase, "bold yellow")
    header = Text.assemble(
        ("nodetask/", "dim"), (p.name, "bold"), "  ", (p.phase or "waiting", style),
        f"   elapsed {duration(p.elapsed(now))}   {p.rate(now):.1f} joined/min",
    )  # fmt: skip
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(p.planned, 1), completed=p.joined, width=50),
        Text(f"{p.joined}/{p.planned} joined", style="bold"),
    )
    phases = Text()
    for ph in PHASES:
        n = p.by_phase.get(ph, 0)
        phases.append(f"{ph} {n}   ", style=PHASE_STYLE[ph] if n else "dim")
    parts: list[RenderableType] = [header, bar, phases]
    if p.failures:
        table = Table("machine", "IP", "attempts", "last error", title="failures", expand=True)
        for f in p.failures[:MAX_FAILURES_SHOWN]:
            table.add_row(f.name, f.ip, str(f.attempts), Text(f.error, style="red"))
        if len(p.failures) > MAX_FAILURES_SHOWN:
            table.add_row(f"... {len(p.failures) - MAX_FAILURES_SHOWN} more", "", "", "")
        parts.append(table)
    if events:
        parts.append(Text("recent events:", style="dim"))
        parts.extend(Text("  " + e, style="dim") for e in events[-5:])
    return Group(*parts)


def event_line(e: Mapping[str, Any]) -> str:
    when = str(e.get("lastTimestamp") or e.get("eventTime") or "")[11:19]
    count = _int(e.get("count"))
    times = f" (x{count})" if count > 1 else ""
    return f"{when} {e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}{times}"


class Clock:
    """Monotonic seconds (a seam for tests)."""

    def now(self) -> float:
        return time.monotonic()
