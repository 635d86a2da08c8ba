"""penetrator.cli.progress: the task summary the CLI shows (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from penetrator.cli.progress import duration, failure_line, plain_line, progress_of, render

NOW = datetime(2026, 1, 1, 0, 2, 0, tzinfo=UTC)


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "nodes", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "nodeNamePrefix": "e",
            "targetMachines": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
            "nodeNamesOverride": {
                "e-a": "10.0.0.1",
                "e-b": "10.0.0.2",
                "e-c": "10.0.0.3",
                "e-d": "10.0.0.4",
            },
        },
        "status": status,
    }


def test_phases_counts_and_failures() -> None:
    p = progress_of(
        body(
            {
                "nodetaskStatus": "creating",
                "planned": 4,
                "joined": 1,
                "failed": 1,
                "machines": {
                    "e-b": {"phase": "installing", "attempts": 1},
                    "e-c": {"phase": "failed", "attempts": 3, "lastError": "auth refused"},
                },
            }
        )
    )
    assert p.by_phase["joined"] == 1
    assert p.by_phase["installing"] == 1
    assert p.by_phase["failed"] == 1
    assert p.by_phase["pending"] == 1  # e-d, not tried yet
    assert [(f.name, f.ip, f.attempts, f.error) for f in p.failures] == [
        ("e-c", "10.0.0.3", 3, "auth refused")
    ]
    assert not p.finished
    assert p.rate(NOW) == 0.5  # 1 joined in 2 minutes
    line = plain_line(p, NOW)
    assert line.startswith("00:02:00 nodetask/nodes creating: 1/4 joined, 1 failed (")
    assert "elapsed 2m00s, 0.5/min" in line
    assert failure_line(p.failures[0]) == (
        "  failed e-c (10.0.0.3) after 3 attempt(s): auth refused"
    )


def test_before_the_operator_looked() -> None:
    p = progress_of(body(None))
    assert p.phase == ""
    assert p.planned == 4
    assert p.by_phase["pending"] == 4
    assert "waiting" in plain_line(p, NOW)


def test_ready_and_failed_are_finished() -> None:
    assert progress_of(body({"nodetaskStatus": "ready", "planned": 4, "joined": 4})).finished
    assert progress_of(body({"nodetaskStatus": "failed"})).finished


def test_hostile_status_does_not_crash() -> None:
    hostile = {"metadata": None, "spec": None, "status": {"machines": {"x": 5}, "joined": -3}}
    p = progress_of(hostile)
    assert p.joined == 0
    assert p.planned == 0
    p = progress_of({"status": {"machines": ["x"], "planned": "many"}})
    assert p.planned == 0


def test_render_in_a_terminal() -> None:
    console = Console(width=100, record=True, force_terminal=True)
    p = progress_of(
        body(
            {
                "nodetaskStatus": "creating",
                "planned": 4,
                "joined": 2,
                "machines": {"e-c": {"phase": "failed", "attempts": 1, "lastError": "boom"}},
            }
        )
    )
    console.print(render(p, ["00:00:01 Warning MachineFailed: boom"], NOW))
    text = console.export_text()
    assert "2/4 joined" in text
    assert "boom" in text
    assert "recent events" in text


def test_duration() -> None:
    assert duration(5) == "5s"
    assert duration(65) == "1m05s"
    assert duration(3720) == "1h02m"
