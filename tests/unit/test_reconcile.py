"""plan.reconcile: the decision table, rounds, back-off, attempt limit, status
(compat fields and ours), and properties over simulated worlds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penetrator.api import (
    API_VERSION,
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    MachinePhase,
    NodeTask,
    TaskPhase,
)
from penetrator.api.results import MachineResult, ResultsDoc
from penetrator.api.settings import ReconcileSettings
from penetrator.plan.reconcile import (
    ApplyConfigMap,
    ApplySecret,
    CreateJob,
    Decision,
    DeleteJob,
    EmitEvent,
    ObservedJob,
    RequeueAfter,
    WriteResults,
    fold,
    reconcile,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = ReconcileSettings(max_attempts=3, backoff_base=30, backoff_max=600, poll_interval=10)


def make_task(
    n: int = 3, *, status: dict[str, Any] | None = None, prepared: bool = True
) -> NodeTask:
    plan = {f"edge-{i:06d}": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(n)}
    meta: dict[str, Any] = {"name": "nodes", "uid": "u-1", "generation": 2}
    spec: dict[str, Any] = {"sshCredential": "login", "proxyNode": "proxy-1"}
    if prepared:
        meta["labels"] = {NODE_LABEL: "nodes-abc123"}
        meta["annotations"] = {
            JOB_NAME_ANNOTATION: "nodes-job",
            CONFIGMAP_NAME_ANNOTATION: "nodes-config",
        }
        spec["nodeNamesOverride"] = plan
    else:
        spec["nodeNamePrefix"] = "edge"
        spec["targetMachines"] = list(plan.values())
    return NodeTask.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "NodeTask",
            "metadata": meta,
            "spec": spec,
            "status": status or {},
        }
    )


def kinds(d: Decision) -> list[str]:
    return [type(a).__name__ for a in d.actions]


def only(d: Decision, kind: type[Any]) -> Any:
    found = [a for a in d.actions if isinstance(a, kind)]
    assert len(found) == 1, kinds(d)
    return found[0]


# --- the decision table --------------------------------------------------------------


def test_unprepared_task_waits_without_actions() -> None:
    d = reconcile(make_task(prepared=False), {}, None, None, T0, S)
    assert d.actions == ()
    assert d.status.nodetask_status is TaskPhase.CREATING
    assert d.status.condition("Progressing").reason == "WaitingForPreparation"  # type: ignore[union-attr]


def test_new_task_starts_round_one_in_order() -> None:
    task = make_task(3)
    d = reconcile(task, {}, None, None, T0, S)
    assert kinds(d) == [
        "WriteResults",
        "ApplySecret",
        "ApplyConfigMap",
        "CreateJob",
        "EmitEvent",
        "RequeueAfter",
    ]
    doc = only(d, WriteResults).doc
    assert doc.round == 1
    assert doc.started == T0
    assert doc.finished is None
    assert {n: (m.attempts, m.round, m.phase) for n, m in doc.machines.items()} == {
        n: (1, 1, MachinePhase.PENDING) for n in task.spec.plan()
    }
    assert dict(only(d, ApplyConfigMap).machines) == task.spec.plan()
    st_ = d.status
    assert st_.nodetask_status is TaskPhase.CREATING
    assert st_.node_status == task.spec.plan()
    assert (st_.planned, st_.joined, st_.failed) == (3, 0, 0)
    assert st_.observed_generation == 2
    assert st_.condition("Ready").reason == "Installing"  # type: ignore[union-attr]


def test_already_installed_machines_are_left_out() -> None:
    task = make_task(3)
    plan = task.spec.plan()
    first = next(iter(plan))
    d = reconcile(task, {first: plan[first]}, None, None, T0, S)
    assert first not in only(d, ApplyConfigMap).machines
    assert first not in d.status.node_status
    assert d.status.joined == 1


def test_all_installed_is_ready_with_one_event() -> None:
    task = make_task(2)
    d = reconcile(task, task.spec.plan(), None, None, T0, S)
    assert kinds(d) == ["EmitEvent"]
    assert only(d, EmitEvent).reason == "Ready"
    # Said once even if the next step still reads the task as creating.
    assert only(d, EmitEvent).once
    assert d.status.nodetask_status is TaskPhase.READY
    assert d.status.node_status == {}
    again = make_task(2, status=d.status.to_dict())
    d2 = reconcile(again, again.spec.plan(), None, None, T0 + timedelta(hours=1), S)
    assert d2.actions == ()  # the Ready event once
    assert d2.status == d.status  # transition times kept


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (ObservedJob("nodes-job", "j1", deleting=True), ["RequeueAfter"]),
        (ObservedJob("nodes-job", "j1"), ["RequeueAfter"]),
    ],
)
def test_existing_job_running_or_deleting_only_waits(job: ObservedJob, expected: list[str]) -> None:
    task = make_task(3)
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=5), S)
    assert kinds(d) == expected


def test_finished_job_is_folded_then_deleted() -> None:
    task = make_task(3)
    names = list(task.spec.plan())
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    t1 = T0 + timedelta(seconds=60)
    doc = doc.with_machine(
        names[1],
        doc.machines[names[1]].model_copy(
            update={"phase": MachinePhase.FAILED, "error": "auth failed"}
        ),
    ).model_copy(update={"updated": t1})
    installed = {names[0]: task.spec.plan()[names[0]]}
    job = ObservedJob("nodes-job", "j1", finished=True, reason="BackoffLimitExceeded")
    d = reconcile(task, installed, job, doc, t1, S)
    assert kinds(d)[0] == "WriteResults"
    assert kinds(d)[-2:] == ["DeleteJob", "RequeueAfter"]
    assert only(d, DeleteJob) == DeleteJob("nodes-job", "j1")
    folded = only(d, WriteResults).doc
    assert folded.finished == t1
    assert folded.machines[names[0]].phase is MachinePhase.JOINED
    assert folded.machines[names[1]].phase is MachinePhase.PENDING
    assert folded.machines[names[1]].error == "auth failed"
    assert folded.machines[names[2]].phase is MachinePhase.PENDING
    assert "BackoffLimitExceeded" in (folded.machines[names[2]].error or "")
    assert d.round_finished == 1
    reasons = [a.reason for a in d.actions if isinstance(a, EmitEvent)]
    assert reasons[0] == "RoundFinished"
    assert "MachinesJoined" in reasons
    # the credential copy goes before the Job: no Job needs it any more
    assert kinds(d)[-3:] == ["StripCredential", "DeleteJob", "RequeueAfter"]
    # the same job seen again after the fold: only strip (idempotent) and delete
    d2 = reconcile(task, installed, job, folded, t1 + timedelta(seconds=1), S)
    assert kinds(d2) == ["StripCredential", "DeleteJob", "RequeueAfter"]


def test_backoff_grows_and_next_round_retries_only_the_rest() -> None:
    task = make_task(2)
    names = list(task.spec.plan())
    installed = {names[0]: task.spec.plan()[names[0]]}
    doc = ResultsDoc(
        round=1,
        started=T0,
        finished=T0 + timedelta(seconds=100),
        machines={
            names[0]: MachineResult(ip="10.0.0.0", phase=MachinePhase.JOINED, attempts=1, round=1),
            names[1]: MachineResult(
                ip="10.0.0.1", phase=MachinePhase.PENDING, attempts=1, round=1, error="x"
            ),
        },
    )
    early = reconcile(task, installed, None, doc, T0 + timedelta(seconds=110), S)
    assert kinds(early) == ["RequeueAfter"]
    assert only(early, RequeueAfter).seconds == pytest.approx(20)
    assert early.status.condition("Progressing").reason == "BackingOff"  # type: ignore[union-attr]
    d = reconcile(task, installed, None, doc, T0 + timedelta(seconds=130), S)
    assert dict(only(d, ApplyConfigMap).machines) == {names[1]: "10.0.0.1"}
    new = only(d, WriteResults).doc
    assert new.round == 2
    assert new.machines[names[1]].attempts == 2
    assert new.machines[names[1]].error == "x"  # the last error stays until replaced
    assert S.backoff(1) == 30
    assert S.backoff(2) == 60
    assert S.backoff(3) == 120
    assert S.backoff(30) == 600


def test_attempt_limit_makes_machine_failed_and_task_failed() -> None:
    task = make_task(2)
    names = list(task.spec.plan())
    installed = {names[0]: task.spec.plan()[names[0]]}
    doc = ResultsDoc(
        round=3,
        started=T0,
        machines={
            names[0]: MachineResult(ip="10.0.0.0", phase=MachinePhase.JOINED, attempts=1, round=1),
            names[1]: MachineResult(
                ip="10.0.0.1",
                phase=MachinePhase.FAILED,
                attempts=3,
                round=3,
                error="Permission denied",
            ),
        },
        updated=T0 + timedelta(seconds=1),
    )
    job = ObservedJob("nodes-job", "j3", finished=True)
    d = reconcile(task, installed, job, doc, T0 + timedelta(seconds=9), S)
    assert only(d, WriteResults).doc.machines[names[1]].phase is MachinePhase.FAILED
    # the Job still exists: not final yet, but the machine is failed for good
    assert d.status.nodetask_status is TaskPhase.CREATING
    assert d.status.failed == 1
    reasons = [a.reason for a in d.actions if isinstance(a, EmitEvent)]
    assert "MachinesFailed" in reasons  # reported by the job as failed at the last attempt
    assert "Failed" not in reasons
    gone = task.model_copy(update={"status": d.status})
    d2 = reconcile(gone, installed, None, only(d, WriteResults).doc, T0 + timedelta(seconds=12), S)
    assert d2.status.nodetask_status is TaskPhase.FAILED
    assert d2.status.node_status == {names[1]: "10.0.0.1"}  # compat: not installed
    assert d2.status.failed == 1
    assert d2.status.machines[names[1]].phase is MachinePhase.FAILED
    assert d2.status.machines[names[1]].last_error == "Permission denied"
    assert [(a.reason, a.once) for a in d2.actions if isinstance(a, EmitEvent)] == [
        ("Failed", True)
    ]
    done = task.model_copy(update={"status": d2.status})
    after = reconcile(done, installed, None, only(d, WriteResults).doc, T0 + timedelta(hours=1), S)
    assert not any(isinstance(a, CreateJob) for a in after.actions)
    assert [a.reason for a in after.actions if isinstance(a, EmitEvent)] == []  # once


def test_round_started_but_job_never_created_is_resumed_without_a_new_attempt() -> None:
    task = make_task(3)
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    d = reconcile(task, {}, None, doc, T0 + timedelta(seconds=3), S)
    assert kinds(d) == ["ApplySecret", "ApplyConfigMap", "CreateJob", "RequeueAfter"]
    assert only(d, CreateJob).round == 1
    assert not any(isinstance(a, WriteResults) for a in d.actions)


def test_job_vanished_after_writing_results_is_folded() -> None:
    task = make_task(1)
    name = next(iter(task.spec.plan()))
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    doc = doc.with_machine(
        name, doc.machines[name].model_copy(update={"phase": MachinePhase.INSTALLING})
    ).model_copy(update={"updated": T0 + timedelta(seconds=2)})
    d = reconcile(task, {}, None, doc, T0 + timedelta(seconds=9), S)
    assert kinds(d)[0] == "WriteResults"
    assert only(d, WriteResults).doc.finished is not None
    assert not any(isinstance(a, CreateJob) for a in d.actions)  # back-off first


def test_busy_machines_wait_for_the_other_task() -> None:
    task = make_task(2)
    plan = task.spec.plan()
    names = list(plan)
    d = reconcile(task, {}, None, None, T0, S, busy={plan[names[0]]: "older"})
    assert dict(only(d, ApplyConfigMap).machines) == {names[1]: plan[names[1]]}
    assert "older" in (d.status.machines[names[0]].last_error or "")
    all_busy = {ip: "older" for ip in plan.values()}
    d2 = reconcile(task, {}, None, None, T0, S, busy=all_busy)
    assert kinds(d2) == ["RequeueAfter"]
    assert d2.status.condition("Progressing").reason == "WaitingForOtherTask"  # type: ignore[union-attr]


def test_job_reported_joined_but_no_label_is_retried() -> None:
    task = make_task(1)
    name = next(iter(task.spec.plan()))
    doc = ResultsDoc(
        round=1,
        started=T0,
        machines={
            name: MachineResult(ip="10.0.0.0", phase=MachinePhase.JOINED, attempts=1, round=1)
        },
    )
    folded, _ = fold(doc, {}, None, T0, S)
    assert folded.machines[name].phase is MachinePhase.PENDING
    assert "label" in (folded.machines[name].error or "")


def test_status_is_bounded_for_5000_machines() -> None:
    task = make_task(5000)
    doc = ResultsDoc(
        round=1,
        started=T0,
        machines={
            n: MachineResult(ip=ip, phase=MachinePhase.FAILED, attempts=3, round=1, error="e" * 500)
            for n, ip in task.spec.plan().items()
        },
    )
    d = reconcile(task, {}, ObservedJob("nodes-job", "j", finished=True), doc, T0, S)
    size = len(json.dumps(d.status.to_dict()))
    assert size < 400 * 1024, size
    assert d.status.failed == 5000
    assert len(d.status.node_status) == 5000
    assert len(d.status.machines) <= 1000
    results_size = len(only(d, WriteResults).doc.to_json())
    assert results_size < 900 * 1024, results_size


def test_events_are_aggregated_for_large_rounds() -> None:
    task = make_task(500)
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    d = reconcile(task, task.spec.plan(), ObservedJob("j", "u", finished=True), doc, T0, S)
    joined = [a for a in d.actions if isinstance(a, EmitEvent) and a.reason == "MachinesJoined"]
    assert len(joined) == 1
    assert "and 490 more" in joined[0].message
    assert len(joined[0].message) < 1024


# --- simulated worlds (properties) -------------------------------------------------------


@dataclass
class World:
    """The cluster as the operator sees it; applies decisions like the operator does."""

    task: NodeTask
    outcome: Callable[[str, int], bool]  # (name, attempt) -> joins?
    now: datetime = T0
    installed: dict[str, str] = field(default_factory=dict)
    job: ObservedJob | None = None
    doc: ResultsDoc | None = None
    configmap: dict[str, str] = field(default_factory=dict)
    jobs_created: int = 0
    tries: dict[str, int] = field(default_factory=dict)
    max_jobs_at_once: int = 0

    def apply(self, d: Decision) -> None:
        for a in d.actions:
            if isinstance(a, WriteResults):
                self.doc = a.doc
            elif isinstance(a, ApplyConfigMap):
                self.configmap = dict(a.machines)
            elif isinstance(a, CreateJob):
                assert self.job is None, "a second Job"
                self.jobs_created += 1
                self.job = ObservedJob("nodes-job", f"j{self.jobs_created}")
            elif isinstance(a, DeleteJob):
                assert self.job is not None
                assert self.job.finished
                self.job = ObservedJob(self.job.name, self.job.uid, True, deleting=True)
            elif isinstance(a, ApplySecret | EmitEvent | RequeueAfter):
                pass
        self.task = self.task.model_copy(update={"status": d.status})

    def run_job(self) -> None:
        """The Job runs to its end: writes results, labels the joined Nodes."""
        assert self.job is not None
        assert self.doc is not None
        doc = self.doc
        for name, ip in self.configmap.items():
            self.tries[name] = self.tries.get(name, 0) + 1
            ok = self.outcome(name, self.tries[name])
            if ok:
                self.installed[name] = ip
            entry = doc.machines[name].model_copy(
                update={
                    "phase": MachinePhase.JOINED if ok else MachinePhase.FAILED,
                    "error": None if ok else "it failed",
                }
            )
            doc = doc.with_machine(name, entry)
        self.doc = doc.model_copy(update={"done": True, "updated": self.now})
        self.job = ObservedJob(self.job.name, self.job.uid, finished=True)

    def step(self) -> Decision:
        d = reconcile(self.task, self.installed, self.job, self.doc, self.now, S)
        again = reconcile(self.task, self.installed, self.job, self.doc, self.now, S)
        assert again == d  # idempotent for the same observed state
        assert sum(isinstance(a, CreateJob) for a in d.actions) <= 1
        if self.job is not None:
            assert not any(isinstance(a, CreateJob) for a in d.actions)
        self.apply(d)
        return d

    def run(self, limit: int = 200) -> None:
        for _ in range(limit):
            d = self.step()
            if self.job is not None and self.job.deleting:
                self.job = None  # GC done
            elif self.job is not None and not self.job.finished:
                self.run_job()
            if d.status.nodetask_status in (TaskPhase.READY, TaskPhase.FAILED) and not d.actions:
                return
            self.now += timedelta(seconds=d.requeue_after or 1)
        raise AssertionError("no end")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=25),
    fail_until=st.lists(st.integers(min_value=0, max_value=5), min_size=25, max_size=25),
)
def test_world_ends_and_honours_attempt_limit(n: int, fail_until: list[int]) -> None:
    task = make_task(n)
    names = list(task.spec.plan())
    need = {name: fail_until[i] for i, name in enumerate(names)}  # fails this many times
    w = World(task, lambda name, attempt: attempt > need[name])
    w.run()
    status = w.task.status
    for name in names:
        if need[name] < S.max_attempts:
            assert name in w.installed
            assert w.tries[name] == need[name] + 1
        else:
            assert name not in w.installed
            assert w.tries[name] == S.max_attempts  # never more than the limit
            assert status.machines[name].phase is MachinePhase.FAILED
    expected_failed = sum(1 for v in need.values() if v >= S.max_attempts)
    assert status.failed == expected_failed
    assert status.joined == n - expected_failed
    assert status.nodetask_status is (TaskPhase.FAILED if expected_failed else TaskPhase.READY)
    assert set(status.node_status) == {x for x in names if x not in w.installed}
    assert w.jobs_created <= S.max_attempts


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=10),
    installed_mask=st.lists(st.booleans(), min_size=10, max_size=10),
    round_=st.integers(min_value=0, max_value=5),
    finished=st.booleans(),
    job_state=st.sampled_from(["none", "running", "finished", "deleting"]),
    elapsed=st.integers(min_value=0, max_value=2000),
)
def test_any_state_at_most_one_create_job_and_never_with_a_job(
    n: int,
    installed_mask: list[bool],
    round_: int,
    finished: bool,
    job_state: str,
    elapsed: int,
) -> None:
    task = make_task(n)
    plan = task.spec.plan()
    installed = {k: v for i, (k, v) in enumerate(plan.items()) if installed_mask[i]}
    doc = ResultsDoc(
        round=round_,
        started=T0 if round_ else None,
        finished=T0 if round_ and finished else None,
        machines={
            k: MachineResult(ip=v, attempts=min(round_, 3), round=round_)
            for k, v in plan.items()
            if round_
        },
    )
    job = {
        "none": None,
        "running": ObservedJob("j", "u"),
        "finished": ObservedJob("j", "u", finished=True),
        "deleting": ObservedJob("j", "u", finished=True, deleting=True),
    }[job_state]
    now = T0 + timedelta(seconds=elapsed)
    d = reconcile(task, installed, job, doc, now, S)
    assert d == reconcile(task, installed, job, doc, now, S)
    creates = [a for a in d.actions if isinstance(a, CreateJob)]
    assert len(creates) <= 1
    if job is not None:
        assert not creates
    if creates:
        cm = only(d, ApplyConfigMap)
        assert not set(cm.machines) & set(installed)
        assert cm.machines
    for a in d.actions:
        if isinstance(a, DeleteJob):
            assert job is not None
            assert not job.deleting
            # finished, or never started within the start timeout (nothing written)
            assert job.finished or (elapsed > S.start_timeout and round_ > 0 and not finished)
    for m in d.status.machines.values():
        assert m.attempts <= S.max_attempts
    assert set(d.status.node_status) == set(plan) - set(installed)


def test_add_task_without_names_waits_then_plans_from_the_names_in_its_spec() -> None:
    raw = make_task(3, prepared=False).to_dict()
    raw["metadata"]["labels"] = {NODE_LABEL: "nodes-abc123"}
    raw["metadata"]["annotations"] = {
        JOB_NAME_ANNOTATION: "nodes-job",
        CONFIGMAP_NAME_ANNOTATION: "nodes-config",
    }
    task = NodeTask.from_dict(raw)
    assert reconcile(task, {}, None, None, T0, S).actions == ()  # no names yet
    names = {f"edge-{i:06d}": ip for i, ip in enumerate(task.spec.unique_machines())}
    planned = task.model_copy(update={"spec": task.spec.with_generated_names(names)})
    d = reconcile(planned, {}, None, None, T0, S)
    assert dict(only(d, ApplyConfigMap).machines) == names
    assert set(only(d, WriteResults).doc.machines) == set(names)
    assert d.status.node_status == names


def test_round_finished_counts_every_machine_to_retry() -> None:
    task = make_task(2)
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    d = reconcile(
        task, {}, ObservedJob("j", "u", finished=True, reason="DeadlineExceeded"), doc, T0, S
    )
    (finished,) = [a for a in d.actions if isinstance(a, EmitEvent) and a.reason == "RoundFinished"]
    assert "2 to retry" in finished.message


def test_a_job_that_never_starts_is_given_up_after_the_start_timeout() -> None:
    task = make_task(2)
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    job = ObservedJob("nodes-job", "j1")  # running (its pod Pending), wrote nothing
    early = reconcile(task, {}, job, doc, T0 + timedelta(seconds=S.start_timeout - 1), S)
    assert kinds(early) == ["RequeueAfter"]
    d = reconcile(task, {}, job, doc, T0 + timedelta(seconds=S.start_timeout + 1), S)
    assert kinds(d)[0] == "WriteResults"
    assert only(d, DeleteJob) == DeleteJob("nodes-job", "j1")
    folded = only(d, WriteResults).doc
    assert folded.finished is not None
    for m in folded.machines.values():
        assert m.phase is MachinePhase.PENDING
        assert "did not start" in (m.error or "")
    assert "JobNotStarted" in [a.reason for a in d.actions if isinstance(a, EmitEvent)]
    assert d.status.nodetask_status is TaskPhase.CREATING
    # a job that wrote something is never given up, however long it runs
    t1 = T0 + timedelta(seconds=5)
    name = next(iter(doc.machines))
    busy = doc.with_machine(
        name, doc.machines[name].model_copy(update={"phase": MachinePhase.INSTALLING})
    ).model_copy(update={"updated": t1})
    late = reconcile(task, {}, job, busy, T0 + timedelta(hours=5), S)
    assert kinds(late) == ["RequeueAfter"]


def test_a_pinned_host_key_outlives_the_fold_and_the_next_round_start() -> None:
    """The ledger keeps each machine's pinned key: the operator reads it back when it
    applies the next round's Secret (after writing that round's document)."""
    task = make_task(2)
    name = next(iter(task.spec.plan()))
    fp = "SHA256:" + "A" * 43
    doc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    reported = doc.machines[name].model_copy(
        update={"phase": MachinePhase.FAILED, "error": "install failed", "host_key": fp}
    )
    t1 = T0 + timedelta(seconds=5)
    doc = doc.with_machine(name, reported).model_copy(update={"updated": t1, "done": True})
    job = ObservedJob("nodes-job", "j1", finished=True)
    folded = only(reconcile(task, {}, job, doc, t1, S), WriteResults).doc
    assert folded.machines[name].host_key == fp
    later = t1 + timedelta(seconds=S.backoff(1) + 1)
    d = reconcile(task, {}, None, folded, later, S)
    assert kinds(d)[:2] == ["WriteResults", "ApplySecret"]
    second = only(d, WriteResults).doc
    assert second.round == 2
    assert second.machines[name].host_key == fp
    assert second.machines[name].attempts == 2


# --- one test per row function ----------------------------------------------------


def observed(task: NodeTask, doc: ResultsDoc | None = None, **kw: Any) -> Any:
    from penetrator.plan.reconcile import Observed

    return Observed(
        task, task.spec.plan(), kw.pop("installed", {}), doc or ResultsDoc(), T0, S, **kw
    )


def _round_one(task: NodeTask) -> ResultsDoc:
    doc: ResultsDoc = only(reconcile(task, {}, None, None, T0, S), WriteResults).doc
    return doc


def test_row_0_waiting_for_preparation() -> None:
    from penetrator.plan.reconcile import row_waiting_for_preparation

    d = row_waiting_for_preparation(make_task(prepared=False), T0)
    assert d.actions == ()
    assert d.status.condition("Progressing").reason == "WaitingForPreparation"  # type: ignore[union-attr]


def test_row_1_job_deleting_matches_only_a_job_being_deleted() -> None:
    from penetrator.plan.reconcile import row_job_deleting

    o = observed(make_task(2))
    assert row_job_deleting(o, ObservedJob("j", "u")) is None
    d = row_job_deleting(o, ObservedJob("j", "u", deleting=True))
    assert d is not None
    assert d.actions == (RequeueAfter(S.deletion_poll),)
    assert d.status.nodetask_status is TaskPhase.CREATING  # not settled while a Job exists


def test_row_2a_job_not_started_only_after_the_start_timeout_with_nothing_written() -> None:
    from penetrator.plan.reconcile import Observed, row_job_not_started

    task = make_task(2)
    doc = _round_one(task)
    job = ObservedJob("nodes-job", "j1")
    assert row_job_not_started(observed(task, doc), job) is None  # just started
    late = Observed(task, task.spec.plan(), {}, doc, T0 + timedelta(seconds=S.start_timeout + 1), S)
    d = row_job_not_started(late, job)
    assert d is not None
    assert kinds(d)[0] == "WriteResults"
    assert kinds(d)[-2:] == ["DeleteJob", "RequeueAfter"]
    assert d.round_finished == 1
    wrote = doc.model_copy(update={"updated": T0})  # the Job wrote the document
    assert row_job_not_started(late.with_doc(wrote), job) is None  # it ran


def test_row_2_job_running_polls() -> None:
    from penetrator.plan.reconcile import row_job_running

    o = observed(make_task(2), _round_one(make_task(2)))
    assert row_job_running(o, ObservedJob("j", "u", finished=True)) is None
    d = row_job_running(o, ObservedJob("j", "u"))
    assert d is not None
    assert d.actions == (RequeueAfter(S.poll_interval),)
    assert d.status.condition("Progressing").reason == "RoundRunning"  # type: ignore[union-attr]


def test_rows_3_4_finished_job_folded_once_then_deleted() -> None:
    from penetrator.plan.reconcile import row_job_finished

    task = make_task(2)
    job = ObservedJob("nodes-job", "j1", finished=True)
    d = row_job_finished(observed(task, _round_one(task)), job)
    assert kinds(d)[0] == "WriteResults"
    assert d.round_finished == 1
    folded = only(d, WriteResults).doc
    again = row_job_finished(observed(task, folded), job)
    assert kinds(again) == ["StripCredential", "DeleteJob", "RequeueAfter"]
    assert again.round_finished is None


def test_row_5_resume_round_only_when_the_round_never_ran() -> None:
    from penetrator.plan.reconcile import row_resume_round

    task = make_task(2)
    assert row_resume_round(observed(task)) is None  # no round yet
    doc = _round_one(task)
    d = row_resume_round(observed(task, doc))
    assert d is not None
    assert kinds(d) == [
        "ApplySecret",
        "ApplyConfigMap",
        "CreateJob",
        "RequeueAfter",
    ]
    ran = doc.model_copy(update={"updated": T0})  # the Job wrote the document
    assert row_resume_round(observed(task, ran)) is None


def test_row_6_fold_without_job_only_for_an_open_round() -> None:
    from penetrator.plan.reconcile import row_fold_without_job

    task = make_task(2)
    o, prefix = row_fold_without_job(observed(task))
    assert prefix.actions == ()
    assert prefix.round_finished is None
    assert o.doc == ResultsDoc()
    o, prefix = row_fold_without_job(observed(task, _round_one(task)))
    assert kinds(prefix)[0] == "WriteResults"
    assert kinds(prefix)[-1] == "StripCredential"  # the Job is gone: so is the credential
    assert prefix.round_finished == 1
    assert o.doc.finished == T0


def test_row_7_done_when_nothing_is_left() -> None:
    from penetrator.plan.reconcile import row_done

    task = make_task(2)
    assert row_done(observed(task)) is None
    d = row_done(observed(task, installed=task.spec.plan()))
    assert d is not None
    assert d.actions == ()
    assert d.status.nodetask_status is TaskPhase.READY


def test_row_8_all_busy_waits_for_the_other_task() -> None:
    from penetrator.plan.reconcile import row_all_busy

    task = make_task(2)
    ips = list(task.spec.plan().values())
    assert row_all_busy(observed(task, busy_ips={ips[0]: "older"})) is None
    d = row_all_busy(observed(task, busy_ips=dict.fromkeys(ips, "older")))
    assert d is not None
    assert d.actions == (RequeueAfter(S.poll_interval),)


def test_row_9_backing_off_until_the_back_off_is_over() -> None:
    from penetrator.plan.reconcile import Observed, row_backing_off

    task = make_task(1)
    assert row_backing_off(observed(task)) is None  # no round finished yet
    done = ResultsDoc(round=1, started=T0, finished=T0)
    d = row_backing_off(observed(task, done))
    assert d is not None
    assert d.actions == (RequeueAfter(S.backoff(1)),)
    later = Observed(task, task.spec.plan(), {}, done, T0 + timedelta(seconds=S.backoff(1)), S)
    assert row_backing_off(later) is None


def test_row_10_next_round_takes_the_runnable_machines() -> None:
    from penetrator.plan.reconcile import row_next_round

    task = make_task(2)
    plan = task.spec.plan()
    first, second = plan
    d = row_next_round(observed(task, busy_ips={plan[first]: "older"}))
    assert dict(only(d, ApplyConfigMap).machines) == {second: plan[second]}
    assert only(d, WriteResults).doc.round == 1
    assert only(d, CreateJob).round == 1
