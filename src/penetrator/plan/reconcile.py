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
 2a  Job running, nothing written for       WriteResults(folded), events, StripCredential,
     start_timeout since the round started  DeleteJob
 2   Job running                            RequeueAfter(poll) (status: live phases)
 3   Job finished, round not folded         WriteResults(folded), events, StripCredential,
                                            DeleteJob, Requeue
 4   Job finished, round folded             StripCredential, DeleteJob, RequeueAfter
 5   no Job, round started, never ran       ApplySecret, ApplyConfigMap, CreateJob (same round)
 6   no Job, round ran, not folded          WriteResults(folded), events, StripCredential;
                                            go on with 7-10
 7   nothing left to install                final status; Event Ready / Failed once
 8   left machines all busy in other tasks  RequeueAfter(poll) (status: WaitingForOtherTask)
 9   back-off since last round not over     RequeueAfter(rest of back-off)
10   otherwise                              WriteResults(round+1), ApplySecret,
                                            ApplyConfigMap(round machines), CreateJob,
                                            Event RoundStarted, RequeueAfter(poll)
===  =====================================  ==============================================

Each row is one function (``row_*``: ``None`` when it does not match, else its
decision): ``JOB_ROWS`` (1, 2a, 2, 3-4) when a Job exists, else row 5, row 6's fold
and ``NO_JOB_ROWS`` (7-10) on the folded ledger.

The copy of the SSH credential in the task's Secret lives only while a Job may need
it: ``ApplySecret`` copies the user's Secret afresh when a round starts (a rotated
credential reaches the next round) and ``StripCredential`` removes it whenever a
round's Job is over (before the Job is deleted, and when the fold finds it gone).

"Never two Jobs": ``CreateJob`` is only decided when no Job of the task is observed
(also none being deleted), a Job is deleted after it finished, and deletion is
foreground (the Job object stays until its pods are gone); the only Job deleted
before it finished is one that never started (row 2a).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
from penetrator.api.results import MachineResult, ResultsDoc, StartFailure
from penetrator.api.settings import ReconcileSettings

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
    start_failure: StartFailure | None = None
    """Why its pod stopped or cannot go on before the job reported (from the pod's
    status, ``penetrator.k8s.observe.pod_start_failure``)."""


# --- actions ---------------------------------------------------------------------


@dataclass(frozen=True)
class WriteResults:
    """Create or replace the results ConfigMap with ``doc``."""

    doc: ResultsDoc


@dataclass(frozen=True)
class ApplySecret:
    """Apply the task's Secret (bootstrap token, credential copy, known hosts)."""


@dataclass(frozen=True)
class StripCredential:
    """Remove the SSH credential copy from the task's Secret (no Job needs it now)."""


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
    WriteResults
    | ApplySecret
    | StripCredential
    | ApplyConfigMap
    | CreateJob
    | DeleteJob
    | EmitEvent
    | RequeueAfter
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
    if entry is None:
        return False
    stop = doc.start_failure
    if stop is not None and stop.fatal and entry.round == doc.round and doc.finished is not None:
        return True  # another round cannot help (e.g. the package is missing)
    if entry.attempts < settings.max_attempts:
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
    cause = job.start_failure if job is not None and not _ran(doc) else None
    if cause is not None:
        return _fold_stopped(doc, installed, cause, now, settings)
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


def stopped_event(round_: int, cause: StartFailure) -> EmitEvent:
    """The one Warning Event of a cause (a fixed name per reason: said once)."""
    return EmitEvent(
        "Warning",
        cause.reason,
        f"round {round_}: the job stopped before it touched any machine: {cause.message}",
        once=True,
    )


def _fold_stopped(
    doc: ResultsDoc,
    installed: Mapping[str, str],
    cause: StartFailure,
    now: datetime,
    settings: ReconcileSettings,
) -> tuple[ResultsDoc, list[EmitEvent]]:
    """``fold`` of a round whose Job stopped before it reported (``cause``, from its
    pod): every machine of the round gets the cause as its error; a fatal cause fails
    them at once (``_is_final_failure``), else they retry as usual. One Warning Event
    of the cause's reason, nothing per machine (none was touched)."""
    error = f"{cause.reason}: {cause.message}"
    machines: dict[str, MachineResult] = {}
    for name, entry in doc.machines.items():
        if name in installed:
            entry = entry.model_copy(update={"phase": MachinePhase.JOINED, "error": None})
        elif entry.round == doc.round:
            final = cause.fatal or entry.attempts >= settings.max_attempts
            phase = MachinePhase.FAILED if final else MachinePhase.PENDING
            entry = entry.model_copy(update={"phase": phase, "error": error})
        machines[name] = entry
    folded = doc.model_copy(update={"machines": machines, "finished": now, "start_failure": cause})
    return folded, [stopped_event(doc.round, cause)]


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


Progress = tuple[Literal["True", "False"], str, str]
"""The Progressing condition's status, reason and message."""


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
    progressing: Progress,
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
        reason, message = (
            "MachinesFailed",
            (
                f"{len(v.installed)}/{len(v.plan)} joined; {len(v.final_failed)} failed after "
                f"{settings.max_attempts} attempts: {_names_text(sorted(v.final_failed))}"
            ),
        )
        if doc.start_failure is not None:  # the last round's job stopped before it reported
            reason = doc.start_failure.reason
            message = (
                f"{len(v.installed)}/{len(v.plan)} joined; the job stopped before it touched "
                f"any machine: {doc.start_failure.message}"
            )
        ready = _condition(previous, READY, "False", reason, message, now, generation)
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
    """The first matching row of the table (module doc), one function per row."""
    plan = task.spec.plan()
    if not plan or not task.task_label or not task.job_name or not task.configmap_name:
        return row_waiting_for_preparation(task, now)
    busy_ips = {canonical_ip(ip): other for ip, other in (busy or {}).items()}
    o = Observed(task, plan, installed, results or ResultsDoc(), now, settings, busy_ips)
    if job is not None:
        for job_row in JOB_ROWS:
            if (d := job_row(o, job)) is not None:
                return d
        raise AssertionError("rows 3-4 match every finished Job")  # pragma: no cover
    if (d := row_resume_round(o)) is not None:
        return d
    o, prefix = row_fold_without_job(o)
    for row in NO_JOB_ROWS:
        if (d := row(o)) is not None:
            return Decision((*prefix.actions, *d.actions), d.status, prefix.round_finished)
    raise AssertionError("row 10 always matches")  # pragma: no cover


@dataclass(frozen=True)
class Observed:
    """What one step sees, for the rows of the table (``plan`` is known)."""

    task: NodeTask
    plan: dict[str, str]
    installed: Mapping[str, str]
    doc: ResultsDoc
    now: datetime
    settings: ReconcileSettings
    busy_ips: Mapping[str, str] = field(default_factory=dict)

    def view(self) -> _View:
        return _view(self.plan, self.installed, self.doc, self.busy_ips, self.settings)

    def status(
        self,
        progressing: Progress,
        v: _View | None = None,
        settled: bool = True,
    ) -> NodeTaskStatus:
        v = self.view() if v is None else v
        return _status(self.task, v, self.doc, self.now, progressing, self.settings, settled)

    def with_doc(self, doc: ResultsDoc) -> Observed:
        return replace(self, doc=doc)


# --- row 0 ------------------------------------------------------------------------


def row_waiting_for_preparation(task: NodeTask, now: datetime) -> Decision:
    """Row 0: no plan, label or object names yet: nothing to do."""
    generation = task.metadata.generation
    waiting = _condition(
        task.status,
        PROGRESSING,
        "True",
        "WaitingForPreparation",
        "waiting for node names, the task label and object names",
        now,
        generation,
    )
    status = task.status.model_copy(
        update={
            "nodetask_status": TaskPhase.CREATING,
            "observed_generation": generation,
            "conditions": [waiting],
        }
    )
    return Decision((), status)


# --- rows 1-4: a Job exists ---------------------------------------------------------


def row_job_deleting(o: Observed, job: ObservedJob) -> Decision | None:
    """Row 1: wait for the Job's (foreground) deletion."""
    if not job.deleting:
        return None
    why: Progress = ("True", "WaitingForJobDeletion", f"job {job.name} is being deleted")
    st = o.status(why, settled=False)
    return Decision((RequeueAfter(o.settings.deletion_poll),), st)


def _never_started(o: Observed, job: ObservedJob) -> bool:
    doc, settings = o.doc, o.settings
    stop = job.start_failure
    if stop is not None and stop.final and not job.finished and doc.finished is None:
        return doc.round > 0 and not _ran(doc)  # its pod will not get any further
    return (
        not job.finished
        and doc.round > 0
        and doc.finished is None
        and doc.started is not None
        and (o.now - doc.started).total_seconds() > settings.start_timeout
        and not _ran(doc)
    )


def row_job_not_started(o: Observed, job: ObservedJob) -> Decision | None:
    """Row 2a: the Job wrote nothing within ``start_timeout``: fold the round as
    failed attempts and delete the Job."""
    if not _never_started(o, job):
        return None
    timeout = o.settings.start_timeout
    gave_up = ObservedJob(
        job.name,
        job.uid,
        finished=True,
        reason=f"its pod did not start within {timeout:g}s",
        start_failure=job.start_failure,
    )
    doc, events = fold(o.doc, o.installed, gave_up, o.now, o.settings)
    o = o.with_doc(doc)
    why: Progress = ("True", "WaitingForJobDeletion", f"job {job.name} did not start; removing it")
    st = o.status(why, settled=False)
    not_started = EmitEvent(
        "Warning",
        "JobNotStarted",
        f"round {doc.round}: job {job.name} wrote no result within {timeout:g}s; deleting it",
    )
    actions: tuple[Action, ...] = (
        WriteResults(doc),
        *events,
        *(() if job.start_failure is not None else (not_started,)),
        StripCredential(),
        DeleteJob(job.name, job.uid),
        RequeueAfter(o.settings.deletion_poll),
    )
    return Decision(actions, st, doc.round)


def row_job_running(o: Observed, job: ObservedJob) -> Decision | None:
    """Row 2: the Job runs: poll (Job events usually wake the step first)."""
    if job.finished:
        return None
    stop = job.start_failure if not _ran(o.doc) else None
    if stop is not None:  # e.g. an image pull back-off: said now, the round ends later
        waiting: Progress = ("True", stop.reason, f"round {o.doc.round}: {stop.message}")
        st = o.status(waiting, settled=False)
        requeue = RequeueAfter(o.settings.poll_interval)
        old = o.task.status.condition(PROGRESSING)
        said = old is not None and old.reason == stop.reason
        return Decision((*(() if said else (stopped_event(o.doc.round, stop),)), requeue), st)
    why: Progress = ("True", "RoundRunning", f"round {o.doc.round}: job {job.name} is running")
    st = o.status(why, settled=False)
    return Decision((RequeueAfter(o.settings.poll_interval),), st)


def row_job_finished(o: Observed, job: ObservedJob) -> Decision:
    """Rows 3-4: the Job finished: fold its round unless folded, then delete it."""
    actions: list[Action] = []
    round_finished: int | None = None
    if o.doc.round > 0 and o.doc.finished is None:
        doc, events = fold(o.doc, o.installed, job, o.now, o.settings)
        o = o.with_doc(doc)
        actions += [WriteResults(doc), *events]
        round_finished = doc.round
    actions += [
        StripCredential(),
        DeleteJob(job.name, job.uid),
        RequeueAfter(o.settings.deletion_poll),
    ]
    why: Progress = (
        "True",
        "WaitingForJobDeletion",
        f"round {o.doc.round} finished; removing job {job.name}",
    )
    st = o.status(why, settled=False)
    return Decision(tuple(actions), st, round_finished)


JOB_ROWS: tuple[Callable[[Observed, ObservedJob], Decision | None], ...] = (
    row_job_deleting,
    row_job_not_started,
    row_job_running,
    row_job_finished,
)
"""Rows 1, 2a, 2, 3-4 in order: the first that returns a decision wins."""


# --- rows 5-6: no Job, a round started and not folded ---------------------------------


def _round_open(doc: ResultsDoc) -> bool:
    return doc.round > 0 and doc.finished is None


def row_resume_round(o: Observed) -> Decision | None:
    """Row 5: the round started but its Job never ran (the step stopped before
    creating it, or it vanished): create it for the same round, no new attempt."""
    doc = o.doc
    if not _round_open(doc) or _ran(doc):
        return None
    v = o.view()
    machines = _round_machines(doc, v)
    if not machines:
        return None
    why: Progress = (
        "True",
        "StartingRound",
        f"round {doc.round}: creating the job for {len(machines)} machines",
    )
    st = o.status(why, v)
    actions = (
        ApplySecret(),
        ApplyConfigMap(machines, doc.round),
        CreateJob(doc.round),
        RequeueAfter(o.settings.poll_interval),
    )
    return Decision(actions, st)


def row_fold_without_job(o: Observed) -> tuple[Observed, Decision]:
    """Row 6: the round ran and its Job is gone: fold it (its actions come first,
    then rows 7-10 decide on the folded ledger). Returns the observations with the
    folded ledger and the fold's actions (none when there is nothing to fold)."""
    if not _round_open(o.doc):
        return o, Decision((), o.task.status)
    doc, events = fold(o.doc, o.installed, None, o.now, o.settings)
    actions: tuple[Action, ...] = (WriteResults(doc), *events, StripCredential())
    return o.with_doc(doc), Decision(actions, o.task.status, doc.round)


# --- rows 7-10: no Job, no open round ---------------------------------------------------


def _runnable(v: _View) -> dict[str, str]:
    return {n: ip for n, ip in v.remaining.items() if n not in v.busy}


def row_done(o: Observed) -> Decision | None:
    """Row 7: nothing left to install (``reconcile`` adds Ready / Failed once)."""
    v = o.view()
    if v.remaining:
        return None
    return Decision((), o.status(("False", "Done", "nothing left to install"), v))


def row_all_busy(o: Observed) -> Decision | None:
    """Row 8: every machine left is held by another task: wait for it."""
    v = o.view()
    if _runnable(v):
        return None
    why: Progress = (
        "True",
        "WaitingForOtherTask",
        f"{len(v.busy)} machines are being installed by other tasks",
    )
    st = o.status(why, v)
    return Decision((RequeueAfter(o.settings.poll_interval),), st)


def row_backing_off(o: Observed) -> Decision | None:
    """Row 9: the back-off after the last round is not over yet."""
    doc = o.doc
    if doc.finished is None:
        return None
    next_at = doc.finished + timedelta(seconds=o.settings.backoff(doc.round))
    if o.now >= next_at:
        return None
    rest = (next_at - o.now).total_seconds()
    v = o.view()
    why: Progress = (
        "True",
        "BackingOff",
        f"round {doc.round + 1} starts in {rest:.0f}s ({len(_runnable(v))} machines)",
    )
    return Decision((RequeueAfter(rest),), o.status(why, v))


def row_next_round(o: Observed) -> Decision:
    """Row 10: start the next round with the machines not held by other tasks."""
    runnable = _runnable(o.view())
    next_round = o.doc.round + 1
    o = o.with_doc(_start_round_doc(o.doc, runnable, next_round, o.now))
    v = o.view()
    why: Progress = ("True", "RoundRunning", f"round {next_round}: {len(runnable)} machines")
    st = o.status(why, v)
    started = EmitEvent(
        "Normal",
        "RoundStarted",
        f"round {next_round}: installing {len(runnable)} machines"
        + (f" ({len(v.busy)} wait for other tasks)" if v.busy else ""),
    )
    actions = (
        WriteResults(o.doc),
        ApplySecret(),
        ApplyConfigMap(runnable, next_round),
        CreateJob(next_round),
        started,
        RequeueAfter(o.settings.poll_interval),
    )
    return Decision(actions, st)


NO_JOB_ROWS: tuple[Callable[[Observed], Decision | None], ...] = (
    row_done,
    row_all_busy,
    row_backing_off,
    row_next_round,
)
"""Rows 7-10 in order, after row 6's fold."""
