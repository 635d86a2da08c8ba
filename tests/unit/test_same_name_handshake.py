"""Reinstall under the same name (pure decisions): the real ``kubeadm join`` refuses a
name whose Node is Ready, so the Job asks in the results for that Node's removal
(``MachineResult.awaits_removal``) and the operator decides which Nodes to delete
(``awaiting_removal``) and when to wake up (``handlers._awaits_removal``). The whole
handshake with the real kubeadm: tests/e2e/test_kubeadm_join.py."""

from __future__ import annotations

from datetime import UTC, datetime

from penetrator.api import MachinePhase
from penetrator.api.results import RESULTS_KEY, MachineResult, ResultsDoc, awaiting_removal
from penetrator.operator.handlers import _awaits_removal

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PLAN = {"edge-a": "10.0.0.1", "edge-b": "10.0.0.2", "edge-c": "10.0.0.3"}


def entry(ip: str, awaits: str | None, phase: MachinePhase = MachinePhase.INSTALLING,
          round_: int = 2) -> MachineResult:  # fmt: skip
    return MachineResult(ip=ip, phase=phase, round=round_, attempts=1, awaits_removal=awaits)


def doc(**machines: MachineResult) -> ResultsDoc:
    return ResultsDoc(round=2, started=T0, machines=machines)


def test_the_running_round_asks_for_its_own_names_of_the_plan() -> None:
    d = doc(**{
        "edge-a": entry("10.0.0.1", "edge-a"),
        "edge-b": entry("10.0.0.2", None),
        "edge-c": entry("10.0.0.3", "edge-c"),
    })  # fmt: skip
    assert awaiting_removal(d, PLAN) == ["edge-a", "edge-c"]


def test_never_a_name_outside_the_plan_or_another_machines_name() -> None:
    d = doc(**{
        "edge-a": entry("10.0.0.1", "control-plane"),  # not its own name
        "other": entry("10.0.0.9", "other"),  # not in the plan
    })  # fmt: skip
    assert awaiting_removal(d, PLAN) == []


def test_stale_flags_remove_nothing() -> None:
    d = doc(**{
        "edge-a": entry("10.0.0.1", "edge-a", MachinePhase.FAILED),  # the machine is over
        "edge-b": entry("10.0.0.2", "edge-b", round_=1),  # an earlier round's
    })  # fmt: skip
    assert awaiting_removal(d, PLAN) == []
    live = doc(**{"edge-c": entry("10.0.0.3", "edge-c")})
    assert awaiting_removal(live.model_copy(update={"finished": T0}), PLAN) == []  # folded
    assert awaiting_removal(live.model_copy(update={"done": True}), PLAN) == []  # job ended


def test_the_ledger_carries_the_request_only_while_it_is_set() -> None:
    asking = doc(**{"edge-a": entry("10.0.0.1", "edge-a")})
    text = asking.to_json()
    back = ResultsDoc.from_json(text)
    assert back.machines["edge-a"].awaits_removal == "edge-a"
    assert _awaits_removal({"data": {RESULTS_KEY: text}})
    quiet = doc(**{"edge-a": entry("10.0.0.1", None)}).to_json()
    assert "awaits_removal" not in quiet
    assert not _awaits_removal({"data": {RESULTS_KEY: quiet}})
    assert not _awaits_removal({"data": None})
    assert not _awaits_removal({})
