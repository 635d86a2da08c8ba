"""The one results document from the install Job to the operator (pure: model + names).

One type, ``ResultsDoc`` with ``MachineResult`` entries, and three views of it:

* the **ledger**, what the Job reports through the API: one ConfigMap in
  ``edge-system`` named ``<configmap-name>-results`` (``results_configmap_name``),
  owned by the task, data key ``results.json``, compact JSON (``ResultsDoc.to_json``):
  per machine its phase, error, attempts, round and pinned host-key fingerprint;
* the **results file** of ``penetrator job --results`` (``to_json(details=True)``):
  the same document with the details of the Job's run (tries, arch, delivery, step
  durations, warnings);
* the Job's **JSON lines** on stdout: one ``MachineResult.line()`` per machine.

It never holds a secret: errors are cut to ``MAX_ERROR_LENGTH`` bytes and must
already be credential-free when written; host keys are public.

The ledger is the task's per-machine record across rounds:

* The **operator** writes it when it starts a round (``round``, ``started``, and for
  every machine of the round ``attempts`` already counting this round, phase
  ``pending``), and when it observes the round's Job finished (``finished``, phases
  folded to ``pending`` / ``failed``). Between rounds no Job exists, so the two
  writers never overlap. It keeps every machine's ``host_key`` (shown to people;
  the pins themselves are kept per proxy node, ``penetrator.api.hostkeys``).
* The **Job** (``penetrator.job.report_api.ResultsWriter``) reads the document once
  at start, then rewrites it (batched) with the ``phase``, ``error`` and ``host_key``
  of each machine it runs and the document's ``updated``; it keeps ``round``,
  ``started``, ``attempts`` and every entry it does not run, and sets ``done`` at
  its end.

``attempts`` therefore counts the rounds that tried a machine, across operator
restarts, without depending on the bounded ``status.machines``; ``tries`` counts the
connections of one Job's run (its retries of transient errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from penetrator.api.constants import MAX_ERROR_LENGTH, MAX_OBJECT_NAME_LENGTH, MachinePhase
from penetrator.api.models import machine_text

MAX_REPLACED: Final = 8
"""Old Nodes reported per machine (one in practice: its name before a rename)."""
RESULTS_SUFFIX: Final = "-results"
RESULTS_KEY: Final = "results.json"
"""Data key of the results ConfigMap."""
RESULTS_VERSION: Final = 2
"""2: one document for the ConfigMap, the results file and the JSON lines (1 had two
formats); entries carry ``host_key``, the document ``updated``."""
MAX_RESULTS_BYTES: Final = 900 * 1024
"""The ledger stays under this when it can (a ConfigMap holds at most 1 MiB)."""
MAX_RESULT_ERRORS: Final = 1000
"""When the ledger would exceed ``MAX_RESULTS_BYTES``, at most this many entries keep
their ``error`` (failed ones first, then by name), as many as fit; status shows fewer
anyway."""
DETAILS: Final = frozenset(
    {"tries", "arch", "skipped", "transferred", "delivery", "durations", "warnings"}
)
"""``MachineResult`` fields of one Job's run: in the results file and the JSON lines,
not in the ledger (5,000 machines' step durations would not fit one ConfigMap)."""


def results_configmap_name(configmap_name: str) -> str:
    """``<configmap-name>-results``; the ConfigMap name is cut so the result stays a
    valid object name (at most 253 characters, no trailing '-' or '.')."""
    head = configmap_name[: MAX_OBJECT_NAME_LENGTH - len(RESULTS_SUFFIX)].rstrip("-.")
    return head + RESULTS_SUFFIX


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a timezone-aware time (UTC)")
    return value.astimezone(UTC).replace(microsecond=0)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MachineResult(BaseModel):
    """One machine's result: its last known state in the task's ledger and, from the
    Job that ran it, the details of that run. The Job changes it in place as the
    machine goes (assignments are validated: an error is cut as it is set)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", validate_assignment=True)

    name: str = Field(default="", max_length=MAX_OBJECT_NAME_LENGTH)
    """The machine (node) name; in a document, its key (left out of the entry)."""
    ip: str = Field(max_length=64)
    phase: MachinePhase = MachinePhase.PENDING
    attempts: int = Field(default=0, ge=0)
    """Rounds that tried this machine (counting the current one)."""
    round: int = Field(default=0, ge=0)
    """The last round that included this machine (0: none yet)."""
    error: str | None = None
    """Last error: one line, at most ``MAX_ERROR_LENGTH`` bytes, credential-free."""
    host_key: str | None = Field(default=None, max_length=128)
    """``SHA256:...`` fingerprint of the host key the Job accepted (tofu: pinned;
    never one it refused, never one accepted unchecked under policy insecure)."""
    replaces: list[str] | None = Field(default=None, max_length=MAX_REPLACED)
    """Nodes of other names that had this machine's address without the task's label
    just before its join (a rename): the operator deletes them once it joined, after
    checking that address again (the job may not write Nodes)."""
    awaits_removal: str | None = Field(default=None, max_length=MAX_OBJECT_NAME_LENGTH)
    """Set by the Job once it has reset the machine: the Node of the machine's own name
    that exists without the task's label, which the real ``kubeadm join`` refuses to
    replace while it is Ready. The operator deletes it (``awaiting_removal``); the Job
    waits until it is gone, joins, and clears this."""
    # --- the details of one Job's run (``DETAILS``) ---
    tries: int = Field(default=0, ge=0)
    """Connections tried in this run (transient errors are retried)."""
    arch: str | None = None
    skipped: bool = False
    """Already a Node with this task's label: nothing done."""
    transferred: bool = False
    """The package was sent in this run."""
    delivery: str | None = None
    """How: ``sftp`` (pushed) or ``http`` (pulled from the Job)."""
    durations: dict[str, float] = Field(default_factory=dict)
    """Step -> seconds (summed over tries)."""
    warnings: list[str] = Field(default_factory=list)

    @field_validator("error", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        if isinstance(value, str):
            return machine_text(value, MAX_ERROR_LENGTH) or None
        return value

    @field_validator("warnings", mode="after")
    @classmethod
    def _clean_warnings(cls, value: list[str]) -> list[str]:
        return [machine_text(w) for w in value]

    @field_serializer("durations")
    def _ser_durations(self, value: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in value.items()}

    def add_time(self, step: str, seconds: float) -> None:
        self.durations[step] = self.durations.get(step, 0.0) + seconds

    def ledger(self) -> MachineResult:
        """A copy without the details of the run (what the ConfigMap holds)."""
        return MachineResult.model_construct(**self.model_dump(exclude=set(DETAILS)))

    def line(self) -> str:
        """One JSON line: every field, the name included (what the Job prints)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class StartFailure(BaseModel):
    """Why a round's Job stopped (or cannot go on) before it reported anything, as the
    operator read it from the Job's pod: the job's own fatal error (its termination
    message, ``<Reason>: <message>``), an image that cannot be pulled, a pod that
    cannot be scheduled, ... No machine was touched."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(max_length=64)
    """One CamelCase word (PackageNotFound, ImagePullBackOff, Unschedulable, ...)."""
    message: str = Field(max_length=MAX_ERROR_LENGTH)
    fatal: bool = False
    """Another round cannot help (a missing package, a wrong checksum, an invalid
    config or credential): the round's machines fail at once."""
    final: bool = True
    """The pod will not get any further: the round ends now (else: at the operator's
    start timeout, the pod may still start)."""

    @field_validator("message", mode="before")
    @classmethod
    def _cut(cls, value: Any) -> Any:
        return machine_text(value) if isinstance(value, str) else value


class ResultsDoc(BaseModel):
    """The document (see the module doc): the ledger, plus the details in a results
    file."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    version: int = RESULTS_VERSION
    round: int = Field(default=0, ge=0)
    """The round the document belongs to (0: no round started yet)."""
    started: datetime | None = None
    """When the operator started ``round``."""
    finished: datetime | None = None
    """When the operator folded ``round`` after its Job ended (None: not yet)."""
    updated: datetime | None = None
    """When the round's Job last wrote (None: it has not written in this round)."""
    done: bool = False
    """The round's Job wrote its last batch."""
    warnings: list[str] = Field(default_factory=list)
    """The Job's warnings about the whole run (e.g. host keys not checked)."""
    machines: dict[str, MachineResult] = Field(default_factory=dict)
    start_failure: StartFailure | None = None
    """Set when the operator folded the round: why its Job stopped before it reported."""

    @field_validator("warnings", mode="after")
    @classmethod
    def _clean_warnings(cls, value: list[str]) -> list[str]:
        return [machine_text(w) for w in value]

    @field_validator("started", "finished", "updated")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_serializer("started", "finished", "updated")
    def _ser_time(self, value: datetime | None) -> str | None:
        return None if value is None else _rfc3339(value)

    @model_validator(mode="after")
    def _named(self) -> ResultsDoc:
        """Each entry is named by its key (the key is the one home of the name)."""
        for key, entry in self.machines.items():
            if entry.name != key:
                self.machines[key] = entry.model_copy(update={"name": key})
        return self

    def to_json(self, details: bool = False) -> str:
        """Compact JSON, None fields left out. The ledger (default: what goes under
        ``results.json``) stays under ``MAX_RESULTS_BYTES`` when it can by dropping
        errors (``MAX_RESULT_ERRORS``); with ``details``, everything (the results
        file)."""
        if details:
            return self._dump(frozenset())
        text = self._dump(DETAILS)
        if len(text) <= MAX_RESULTS_BYTES:
            return text
        bare = self.without_errors(keep=0)
        room = MAX_RESULTS_BYTES - len(bare._dump(DETAILS))
        return self.without_errors(keep=MAX_RESULT_ERRORS, room=room)._dump(DETAILS)

    def _dump(self, leave_out: frozenset[str]) -> str:
        entry = {"name", *leave_out}
        data = self.model_dump(
            mode="json", exclude_none=True, exclude={"machines": {"__all__": entry}}
        )
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    def without_errors(self, keep: int, room: int | None = None) -> ResultsDoc:
        """The errors of all but ``keep`` entries dropped (failed first, then by name);
        with ``room``, also all but those whose JSON fits in ``room`` bytes."""
        with_error = sorted(
            (n for n, m in self.machines.items() if m.error is not None),
            key=lambda n: (self.machines[n].phase is not MachinePhase.FAILED, n),
        )
        kept = 0
        machines = dict(self.machines)
        for name in with_error:
            cost = len(',"error":') + len(json.dumps(machines[name].error))
            if kept < keep and (room is None or cost <= room):
                kept += 1
                room = None if room is None else room - cost
                continue
            machines[name] = machines[name].model_copy(update={"error": None})
        return self.model_copy(update={"machines": machines})

    def ledger(self) -> ResultsDoc:
        """The document as the ledger holds it: entries without the run's details."""
        machines = {n: m.ledger() for n, m in self.machines.items()}
        return self.model_copy(update={"machines": machines})

    @classmethod
    def from_json(cls, text: str) -> ResultsDoc:
        """Parse; ``ValueError`` (without echoing the document) when it is unusable."""
        try:
            data: Any = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError("the results document is not JSON") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            where = ", ".join(
                ".".join(str(p) for p in err["loc"]) or "document" for err in e.errors()[:5]
            )
            raise ValueError(f"the results document is invalid at: {where}") from None

    @classmethod
    def from_configmap_data(cls, data: dict[str, str] | None) -> ResultsDoc | None:
        """The document of a results ConfigMap's ``data``; None when absent or unusable
        (a broken document is treated like a missing one: the round is retried)."""
        text = (data or {}).get(RESULTS_KEY)
        if not text:
            return None
        try:
            return cls.from_json(text)
        except ValueError:
            return None

    def with_machine(self, name: str, result: MachineResult) -> ResultsDoc:
        return self.with_results([result.model_copy(update={"name": name})])

    def with_results(self, results: Iterable[MachineResult]) -> ResultsDoc:
        """This document with these results in place of their machines' entries."""
        machines = {**self.machines, **{r.name: r for r in results}}
        return self.model_copy(update={"machines": machines})


def awaiting_removal(doc: ResultsDoc, plan: Mapping[str, str]) -> list[str]:
    """The Nodes the round's Job waits for the operator to remove (pure): an entry of the
    running round (not folded yet), not finished, whose ``awaits_removal`` is its own
    name, a name of the task's ``plan``. The operator still checks each Node's label
    before it deletes it; a stale flag of an earlier round removes nothing."""
    if doc.finished is not None or doc.done:
        return []
    return sorted(
        name
        for name, entry in doc.machines.items()
        if entry.awaits_removal == name
        and name in plan
        and entry.round == doc.round
        and not entry.phase.finished
    )
