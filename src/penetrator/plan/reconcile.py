"""The reconcile step: one pure function from what was observed to what to do.

``reconcile(task, installed, job, results, now, settings)`` returns the actions the
operator applies, in order (stopping at the first that fails), and the task's new
status. No I/O, no clock but ``now``, no randomness: reconciling the same observed
state twice gives the same decision.

State across rounds lives in the cluster, never in the operator's memory:

* the task's one Job (fixed name from its annotation: the API server itself refuses
  a second Job of that name), observed as ``ObservedJob``;
* the results ConfigMap (``penetrator.api.results.ResultsDoc``): the round number,
  when it started and was folded, and per machine the phase, attempts (rounds that
  tried it), last error and pinned host key;
* the Nodes carrying the task's label (``installed``): the truth about "joined".

The decision table (first matching row wins):

===  =====================================  ==============================================
 #   observed                               actions
===  =====================================  ==============================================
 0   no plan / label / annotations yet      none (status: WaitingForPreparation)
 1   Job being deleted                      RequeueAfter(deletion_poll)
 2a  Job running, nothing written for       WriteResults(folded), events, DeleteJob
     start_timeout since the round started
 2   Job running                            RequeueAfter(poll) (status: live phases)
 3   Job finished, round not folded         WriteResults(folded), events, DeleteJob, Requeue
 4   Job finished, round folded             DeleteJob, RequeueAfter(deletion_poll)
 5   no Job, round started, never ran       ApplySecret, ApplyConfigMap, CreateJob (same round)
 6   no Job, round ran, not folded          WriteResults(folded), events; go on with 7-10
 7   nothing left to install                final status; Event Ready / Failed once
 8   left machines all busy in other tasks  RequeueAfter(poll) (status: WaitingForOtherTask)
 9   back-off since last round not over     RequeueAfter(rest of back-off)
10   otherwise                              WriteResults(round+1), ApplySecret,
                                            ApplyConfigMap(round machines), CreateJob,
                                            Event RoundStarted, RequeueAfter(poll)
===  =====================================  ==============================================

"Never two Jobs": ``CreateJob`` is only decided when no Job of the task is observed
(also none being deleted), a Job is deleted after it finished, and deletion is
foreground (the Job object stays until its pods are gone); the only Job deleted
before it finished is one that never started (row 2a).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from penetrator.api import (
    Condition,
    MachinePhase,
    MachineStatus,
    NodeTask,
    NodeTaskStatus,
    TaskPhase,
    canonical_ip,
)
from penetrator.api.results import MachineResult, ResultsDoc
from penetrator.api.settings import ReconcileSettings
from penetrator.plan.prepare import planned_machines

READY = "Ready"
PROGRESSING = "Progressing"
EVENT_NAMES_LIMIT = 10
"""Machine names listed in one aggregated Event; the rest are counted."""


@dataclass(frozen=True)
class ObservedJob:
    """The task's Job as observed (``penetrator.k8s.observe.observe_job``)."""

    name: str
    uid: str = ""
    finished: bool = False
    """A terminal condition (Complete or Failed) is True: its pods are done."""
    succeeded: bool = False
    deleting: bool = False
    """Has a deletionTimestamp (foreground deletion in progress)."""
    reason: str | None = None
    """Reason of the Failed condition (e.g. DeadlineExceeded)."""


# --- actions ---------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResults:
    """Create or replace the results ConfigMap with ``doc``."""

    doc: ResultsDoc


@dataclass(frozen=True)
class ApplySecret:
    """Apply the task's Secret (bootstrap token, credential copy, known hosts)."""


@dataclass(frozen=True)
class ApplyConfigMap:
    """Apply the task's ConfigMap: the job config for exactly these machines."""

    machines: Mapping[str, str]
    round: int


@dataclass(frozen=True)
class CreateJob:
    round: int


@dataclass(frozen=True)
class DeleteJob:
    """Delete the (finished) Job, foreground, preconditioned on its uid."""

    name: str
    uid: str


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    # Said once for the life of the task, even when two steps read the task before
    # the status that made it final is visible (the Event gets a fixed name).
    once: bool = False


@dataclass(frozen=True)
class RequeueAfter:
    seconds: float


Action = (
    WriteResults | ApplySecret | ApplyConfigMap | CreateJob | DeleteJob | EmitEvent | RequeueAfter
)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: NodeTaskStatus
    round_finished: int | None = None
    """The round folded by this decision (for metrics), if any."""

    @property
    def requeue_after(self) -> float | None:
        times = [a.seconds for a in self.actions if isinstance(a, RequeueAfter)]
        return min(times) if times else None


# --- helpers ---------------------------------------------------------------------


def _names_text(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:EVENT_NAMES_LIMIT])
    more = len(names) - EVENT_NAMES_LIMIT
    return shown + (f" and {more} more" if more > 0 else "")


def _is_final_failure(
    entry: MachineResult | None, doc: ResultsDoc, settings: ReconcileSettings
) -> bool:
    """Tried ``max_attempts`` times and not in a round that is still running (or
    reported failed in its last allowed round)."""
    if entry is None or entry.attempts < settings.max_attempts:
        return False
    round_over = doc.finished is not None or entry.round != doc.round
    return round_over or entry.phase is MachinePhase.FAILED


def _ran(doc: ResultsDoc) -> bool:
    """The round's Job wrote something (so it ran)."""
    if doc.done:
        return True
    return doc.updated is not None and (doc.started is None or doc.updated >= doc.started)


def fold(
    doc: ResultsDoc,
    installed: Mapping[str, str],
    job: ObservedJob | None,
    now: datetime,
    settings: ReconcileSettings,
) -> tuple[ResultsDoc, list[EmitEvent]]:
    """The ledger after the round's Job ended: each machine of the round is joined
    (its Node carries the label), or pending for the next round, or failed at the
    attempt limit. Idempotent: ``fold(fold(d)) == fold(d)`` (up to ``finished``)."""
    why = "the job ended without a result for this machine"
    if job is not None and job.reason:
        why += f" ({job.reason})"
    machines: dict[str, MachineResult] = {}
    joined: list[str] = []
    failed: list[str] = []
    retry: list[str] = []
    for name, entry in doc.machines.items():
        if entry.round != doc.round:
            if name in installed:
                entry = entry.model_copy(update={"phase": MachinePhase.JOINED, "error": None})
            machines[name] = entry  # not in this round (e.g. waiting for another task)
            continue
        if name in installed:
            joined.append(name)
            machines[name] = entry.model_copy(update={"phase": MachinePhase.JOINED, "error": None})
            continue
        error = entry.error
        if entry.phase is MachinePhase.JOINED:
            error = "the job reported it joined but the Node does not carry the task label"
        elif entry.phase is not MachinePhase.FAILED and error is None:
            error = why
        if entry.attempts >= settings.max_attempts:
            failed.append(name)
            machines[name] = entry.model_copy(update={"phase": MachinePhase.FAILED, "error": error})
        else:
            retry.append(name)
            machines[name] = entry.model_copy(
                update={"phase": MachinePhase.PENDING, "error": error}
            )
    folded = doc.model_copy(update={"machines": machines, "finished": now})
    events: list[EmitEvent] = [
        EmitEvent(
            "Normal" if not failed else "Warning",
            "RoundFinished",
            f"round {doc.round}: {len(joined)} joined, {len(retry)} to retry, "
            f"{len(failed)} failed at the attempt limit ({settings.max_attempts})",
        )
    ]
    if joined:
        events.append(EmitEvent("Normal", "MachinesJoined", f"joined: {_names_text(joined)}"))
    if failed:
        events.append(
            EmitEvent(
                "Warning",
                "MachinesFailed",
                f"failed after {settings.max_attempts} attempts: {_names_text(failed)}"
                + _first_error(failed, machines),
            )
        )
    if retry:
        events.append(
            EmitEvent(
                "Warning",
                "MachinesRetry",
                f"will retry: {_names_text(retry)}" + _first_error(retry, machines),
            )
        )
    return folded, events


def _first_error(names: list[str], machines: Mapping[str, MachineResult]) -> str:
    for name in sorted(names):
        error = machines[name].error
        if error:
            return f"; {name}: {error}"
    return ""


def _condition(
    previous: NodeTaskStatus,
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    old = previous.condition(type_)
    since = now
    if old is not None and old.status == status:
        since = old.last_transition_time
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


@dataclass
class _View:
    """The task's machines as decided from the observations."""

    plan: dict[str, str]
    installed: set[str]
    final_failed: set[str] = field(default_factory=set)
    remaining: dict[str, str] = field(default_factory=dict)
    """Planned, not installed, not failed for good."""
    busy: dict[str, str] = field(default_factory=dict)
    """Of ``remaining``: name -> the other task that holds the machine."""


def _view(
    plan: dict[str, str],
    installed: Mapping[str, str],
    doc: ResultsDoc,
    busy: Mapping[str, str],
    settings: ReconcileSettings,
) -> _View:
    v = _View(plan, {n for n in plan if n in installed})
    for name, ip in plan.items():
        if name in v.installed:
            continue
        if _is_final_failure(doc.machines.get(name), doc, settings):
            v.final_failed.add(name)
            continue
        v.remaining[name] = ip
        other = busy.get(ip)
        if other is not None:
            v.busy[name] = other
    return v


def _status(
    task: NodeTask,
    v: _View,
    doc: ResultsDoc,
    now: datetime,
    progressing: tuple[Literal["True", "False"], str, str],
    settings: ReconcileSettings,
    settled: bool = True,
) -> NodeTaskStatus:
    """``settled``: no Job of the task exists; only then is the task ready or failed."""
    previous = task.status
    generation = task.metadata.generation
    machines: dict[str, MachineStatus] = {}
    for name in v.plan:
        if name in v.installed:
            continue
        entry = doc.machines.get(name)
        if name in v.final_failed:
            mphase = MachinePhase.FAILED
        elif entry is None or entry.phase in (MachinePhase.FAILED, MachinePhase.JOINED):
            mphase = MachinePhase.PENDING  # failed with retries left, or not labelled yet
        else:
            mphase = entry.phase
        error = entry.error if entry is not None else None
        if name in v.busy and mphase is MachinePhase.PENDING:
            error = f"waiting: task {v.busy[name]} is installing this machine"
        machines[name] = MachineStatus(
            phase=mphase, attempts=entry.attempts if entry else 0, last_error=error
        )
    if v.remaining or not settled:
        phase = TaskPhase.CREATING
        ready = _condition(
            previous,
            READY,
            "False",
            "Installing",
            f"{len(v.installed)}/{len(v.plan)} joined, {len(v.remaining)} to install"
            + (f", {len(v.final_failed)} failed" if v.final_failed else ""),
            now,
            generation,
        )
    elif v.final_failed:
        phase = TaskPhase.FAILED
        ready = _condition(
            previous,
            READY,
            "False",
            "MachinesFailed",
            f"{len(v.installed)}/{len(v.plan)} joined; {len(v.final_failed)} failed after "
            f"{settings.max_attempts} attempts: {_names_text(sorted(v.final_failed))}",
            now,
            generation,
        )
    else:
        phase = TaskPhase.READY
        ready = _condition(
            previous, READY, "True", "AllJoined", f"all {len(v.plan)} joined", now, generation
        )
    prog = _condition(previous, PROGRESSING, *progressing, now, generation)
    return NodeTaskStatus(
        nodetask_status=phase,
        node_status={n: ip for n, ip in v.plan.items() if n not in v.installed},
        planned=len(v.plan),
        joined=len(v.installed),
        failed=len(v.final_failed),
        machines=machines,
        conditions=[ready, prog],
        observed_generation=generation,
    )


def _start_round_doc(
    doc: ResultsDoc, machines: Mapping[str, str], round_: int, now: datetime
) -> ResultsDoc:
    entries = dict(doc.machines)
    for name, ip in machines.items():
        old = entries.get(name) or MachineResult(ip=ip)
        # the last error and the pinned host key stay (the Secret takes the pins next)
        entries[name] = old.model_copy(
            update={
                "ip": ip,
                "phase": MachinePhase.PENDING,
                "attempts": old.attempts + 1,
                "round": round_,
            }
        )
    return ResultsDoc(round=round_, started=now, finished=None, done=False, machines=entries)


def _round_machines(doc: ResultsDoc, v: _View) -> dict[str, str]:
    """The machines of the started round, still to install."""
    return {
        n: ip
        for n, ip in v.remaining.items()
        if (e := doc.machines.get(n)) is not None and e.round == doc.round and n not in v.busy
    }


# --- the step --------------------------------------------------------------------


def reconcile(
    task: NodeTask,
    installed: Mapping[str, str],
    job: ObservedJob | None,
    results: ResultsDoc | None,
    now: datetime,
    settings: ReconcileSettings,
    busy: Mapping[str, str] | None = None,
) -> Decision:
    """Decide (see the module doc). ``installed``: name -> IP of the Nodes carrying
    this task's label. ``busy``: IP -> name of another task that holds the machine
    (the older of two active tasks wins; the operator computes it). When the task
    becomes ready or failed, one Event says so (the previous status tells)."""
    d = _decide(task, installed, job, results, now, settings, busy)
    final = d.status.nodetask_status
    if final in (TaskPhase.READY, TaskPhase.FAILED) and task.status.nodetask_status != final:
        st = d.status
        if final is TaskPhase.READY:
            event = EmitEvent("Normal", "Ready", f"all {st.planned} machines joined", once=True)
        else:
            failed = sorted(n for n, m in st.machines.items() if m.phase is MachinePhase.FAILED)
            event = EmitEvent(
                "Warning",
                "Failed",
                f"{st.joined}/{st.planned} joined; {st.failed} failed for good: "
                f"{_names_text(failed)}",
                once=True,
            )
        rest = [a for a in d.actions if not isinstance(a, RequeueAfter)]
        requeue = [a for a in d.actions if isinstance(a, RequeueAfter)]
        return Decision((*rest, event, *requeue), d.status, d.round_finished)
    return d


def _decide(
    task: NodeTask,
    installed: Mapping[str, str],
    job: ObservedJob | None,
    results: ResultsDoc | None,
    now: datetime,
    settings: ReconcileSettings,
    busy: Mapping[str, str] | None = None,
) -> Decision:
    busy_ips = {canonical_ip(ip): other for ip, other in (busy or {}).items()}
    plan = planned_machines(task, results)
    if not plan or not task.task_label or not task.job_name or not task.configmap_name:
        status = task.status.model_copy(
            update={
                "nodetask_status": TaskPhase.CREATING,
                "observed_generation": task.metadata.generation,
                "conditions": [
                    _condition(
                        task.status,
                        PROGRESSING,
                        "True",
                        "WaitingForPreparation",
                        "waiting for node names, the task label and object names",
                        now,
                        task.metadata.generation,
                    )
                ],
            }
        )
        return Decision((), status)

    doc = results or ResultsDoc()
    actions: list[Action] = []
    round_finished: int | None = None

    def view() -> _View:
        return _view(plan, installed, doc, busy_ips, settings)

    # rows 1-4: a Job exists
    if job is not None:
        if job.deleting:
            st = _status(
                task,
                view(),
                doc,
                now,
                ("True", "WaitingForJobDeletion", f"job {job.name} is being deleted"),
                settings,
                settled=False,
            )
            return Decision((RequeueAfter(settings.deletion_poll),), st)
        stuck = (
            not job.finished
            and doc.round > 0
            and doc.finished is None
            and doc.started is not None
            and (now - doc.started).total_seconds() > settings.start_timeout
            and not _ran(doc)
        )
        if stuck:
            gave_up = ObservedJob(
                job.name,
                job.uid,
                finished=True,
                reason=f"its pod did not start within {settings.start_timeout:g}s",
            )
            doc, events = fold(doc, installed, gave_up, now, settings)
            st = _status(
                task,
                view(),
                doc,
                now,
                ("True", "WaitingForJobDeletion", f"job {job.name} did not start; removing it"),
                settings,
                settled=False,
            )
            actions = [
                WriteResults(doc),
                *events,
                EmitEvent(
                    "Warning",
                    "JobNotStarted",
                    f"round {doc.round}: job {job.name} wrote no result within "
                    f"{settings.start_timeout:g}s; deleting it",
                ),
                DeleteJob(job.name, job.uid),
                RequeueAfter(settings.deletion_poll),
            ]
            return Decision(tuple(actions), st, doc.round)
        if not job.finished:
            st = _status(
                task,
                view(),
                doc,
                now,
                ("True", "RoundRunning", f"round {doc.round}: job {job.name} is running"),
                settings,
                settled=False,
            )
            return Decision((RequeueAfter(settings.poll_interval),), st)
        if doc.round > 0 and doc.finished is None:
            doc, events = fold(doc, installed, job, now, settings)
            actions += [WriteResults(doc), *events]
            round_finished = doc.round
        actions += [DeleteJob(job.name, job.uid), RequeueAfter(settings.deletion_poll)]
        st = _status(
            task,
            view(),
            doc,
            now,
            (
                "True",
                "WaitingForJobDeletion",
                f"round {doc.round} finished; removing job {job.name}",
            ),
            settings,
            settled=False,
        )
        return Decision(tuple(actions), st, round_finished)

    # rows 5-6: no Job, a round started and not folded
    if doc.round > 0 and doc.finished is None:
        if not _ran(doc):
            v = view()
            machines = _round_machines(doc, v)
            if machines:
                st = _status(
                    task,
                    v,
                    doc,
                    now,
                    (
                        "True",
                        "StartingRound",
                        f"round {doc.round}: creating the job for {len(machines)} machines",
                    ),
                    settings,
                )
                return Decision(
                    (
                        ApplySecret(),
                        ApplyConfigMap(machines, doc.round),
                        CreateJob(doc.round),
                        RequeueAfter(settings.poll_interval),
                    ),
                    st,
                )
        doc, events = fold(doc, installed, None, now, settings)
        actions += [WriteResults(doc), *events]
        round_finished = doc.round

    v = view()
    # row 7: done
    if not v.remaining:
        st = _status(task, v, doc, now, ("False", "Done", "nothing left to install"), settings)
        return Decision(tuple(actions), st, round_finished)

    runnable = {n: ip for n, ip in v.remaining.items() if n not in v.busy}
    # row 8: every machine left is held by another task
    if not runnable:
        st = _status(
            task,
            v,
            doc,
            now,
            (
                "True",
                "WaitingForOtherTask",
                f"{len(v.busy)} machines are being installed by other tasks",
            ),
            settings,
        )
        actions.append(RequeueAfter(settings.poll_interval))
        return Decision(tuple(actions), st, round_finished)

    # row 9: back-off
    if doc.finished is not None:
        wait = settings.backoff(doc.round)
        next_at = doc.finished + timedelta(seconds=wait)
        if now < next_at:
            rest = (next_at - now).total_seconds()
            st = _status(
                task,
                v,
                doc,
                now,
                (
                    "True",
                    "BackingOff",
                    f"round {doc.round + 1} starts in {rest:.0f}s ({len(runnable)} machines)",
                ),
                settings,
            )
            actions.append(RequeueAfter(rest))
            return Decision(tuple(actions), st, round_finished)

    # row 10: the next round
    next_round = doc.round + 1
    doc = _start_round_doc(doc, runnable, next_round, now)
    v = view()
    st = _status(
        task,
        v,
        doc,
        now,
        ("True", "RoundRunning", f"round {next_round}: {len(runnable)} machines"),
        settings,
    )
    actions += [
        WriteResults(doc),
        ApplySecret(),
        ApplyConfigMap(runnable, next_round),
        CreateJob(next_round),
        EmitEvent(
            "Normal",
            "RoundStarted",
            f"round {next_round}: installing {len(runnable)} machines"
            + (f" ({len(v.busy)} wait for other tasks)" if v.busy else ""),
        ),
        RequeueAfter(settings.poll_interval),
    ]
    return Decision(tuple(actions), st, round_finished)
