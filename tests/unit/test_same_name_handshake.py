"""Reinstall under the same name (pure decisions): the real ``kubeadm join`` refuses a
name whose Node is Ready, so the Job asks in the results for that Node's removal
(``MachineResult.awaits_removal``) and the operator decides which Nodes to delete
(``awaiting_removal``) and when to wake up (``handlers._awaits_removal``); the Job's
step (``runner.step_old_node``) against scripted lists of Nodes. The whole handshake
with the real API server and the real kubeadm: tests/e2e/test_kubeadm_join.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from penetrator.api import NODE_LABEL, MachinePhase
from penetrator.api.jobconfig import HostKeyPolicy, JobConfig, Machine
from penetrator.api.results import RESULTS_KEY, MachineResult, ResultsDoc, awaiting_removal
from penetrator.job import runner
from penetrator.job.cluster import Cluster, NodeInfo
from penetrator.job.credentials import Credentials
from penetrator.job.hostkeys import HostKeyStore
from penetrator.job.report import Reporter
from penetrator.job.transport import MachineError
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


# --- the Job's side: ask, wait for a list without the Node, clear (runner.step_old_node)


class NodesCluster(Cluster):
    """Lists of Nodes scripted by the test; the clock moves only when the code sleeps."""

    def __init__(self, lists: list[list[NodeInfo]]) -> None:
        self.now = 1000.0
        super().__init__(None, interval=2.0, clock=lambda: self.now, sleep=self._sleep)  # type: ignore[arg-type]
        self.lists = lists

    async def _sleep(self, s: float) -> None:
        self.now += s
        await asyncio.sleep(0)

    async def list_nodes(self) -> list[NodeInfo]:
        return self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]


class Seen:
    """The results the Job reports (what the results ConfigMap would get)."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def observe(self, result: MachineResult) -> None:
        self.asked.append(result.awaits_removal)


def job(cluster: Cluster) -> tuple[runner.JobContext, Machine, MachineResult, Seen]:
    cfg = JobConfig.model_validate(
        {
            "machines": [{"name": "edge-a", "ip": "10.0.0.1"}],
            "taskLabel": "task-abc123",
            "apiServer": "172.31.0.1:6443",
            "caCertHash": "sha256:" + "0" * 64,
            "packages": {"amd64": "/pkg/amd64.tgz"},
            "timeouts": {"command": 20},
        }
    )
    creds = Credentials(password="x", key=None, token="t", known_hosts=None)
    m = cfg.machines[0]
    r = MachineResult(name=m.name, ip=m.ip)
    seen = Seen()
    ctx = runner.JobContext(
        cfg, creds, HostKeyStore(HostKeyPolicy.TOFU, None), {}, cluster=cluster,
        reporter=Reporter([r], sink=seen),
    )  # fmt: skip
    return ctx, m, r, seen


async def test_the_job_asks_waits_and_clears() -> None:
    old = NodeInfo("edge-a", ready=True)
    c = NodesCluster([[old], [old], [old], []])
    ctx, m, r, seen = job(c)
    await runner.step_old_node(ctx, c, m, r)
    assert seen.asked == ["edge-a", None]  # asked, then cleared once the Node is gone
    assert r.awaits_removal is None


async def test_no_request_without_an_old_node_or_for_a_labelled_one() -> None:
    mine = NodeInfo("edge-a", labels={NODE_LABEL: "task-abc123"}, ready=True)
    for listed in ([], [NodeInfo("other", ready=True)], [mine]):
        c = NodesCluster([listed])
        ctx, m, r, seen = job(c)
        await runner.step_old_node(ctx, c, m, r)
        assert seen.asked == []


async def test_the_machine_fails_clearly_when_the_node_stays() -> None:
    c = NodesCluster([[NodeInfo("edge-a", ready=True)]])
    ctx, m, r, seen = job(c)
    with pytest.raises(MachineError) as e:
        await runner.step_old_node(ctx, c, m, r)
    assert "the old Node edge-a was not removed in time, so no join" in str(e.value)
    assert "still there after 20s" in str(e.value)
    assert seen.asked == ["edge-a"]
    assert r.awaits_removal is None  # the failed machine's entry asks no more
