"""The results channel from the install Job to the operator (pure: model + names).

The Job reports per-machine results through the API into one ConfigMap in
``edge-system`` named ``<configmap-name>-results`` (see ``results_configmap_name``),
owned by the task, under the data key ``results.json``: one compact JSON document
(``ResultsDoc``). It never holds a secret: errors are cut to ``MAX_ERROR_LENGTH``
bytes and must already be credential-free when written.

The same document is the task's per-machine ledger across rounds:

* The **operator** writes it when it starts a round (``round``, ``started``, and for
  every machine of the round ``attempts`` already counting this round, phase
  ``pending``), and when it observes the round's Job finished (``finished``, phases
  folded to ``pending`` / ``failed``). Between rounds no Job exists, so the two
  writers never overlap.
* The **Job** (``penetrator.job.report_api.ResultsWriter``) reads the document once
  at start, then rewrites it (batched) with each machine's ``phase``, ``error`` and
  ``updated``; it keeps ``round``, ``started``, ``attempts`` and every entry it does
  not run, and sets ``done`` at its end.

``attempts`` therefore counts the rounds that tried a machine, across operator
restarts, without depending on the bounded ``status.machines``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from penetrator.api.constants import MAX_ERROR_LENGTH, MAX_OBJECT_NAME_LENGTH, MachinePhase
from penetrator.api.models import truncate_error

RESULTS_SUFFIX: Final = "-results"
RESULTS_KEY: Final = "results.json"
"""Data key of the results ConfigMap."""
RESULTS_VERSION: Final = 1
MAX_RESULTS_BYTES: Final = 900 * 1024
"""A results document stays under this (ConfigMaps hold at most 1 MiB)."""
MAX_RESULT_ERRORS: Final = 1000
"""When a document would exceed ``MAX_RESULTS_BYTES``, only this many entries keep
their ``error`` (failed ones first, then by name); status shows fewer anyway."""


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


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class MachineResult(_Model):
    """One machine's last known state in the task's ledger."""

    ip: str = Field(max_length=64)
    phase: MachinePhase = MachinePhase.PENDING
    attempts: int = Field(default=0, ge=0)
    """Rounds that tried this machine (counting the current one)."""
    round: int = Field(default=0, ge=0)
    """The last round that included this machine (0: none yet)."""
    error: str | None = None
    """Last error: one line, at most ``MAX_ERROR_LENGTH`` bytes, credential-free."""
    updated: datetime | None = None
    """When the Job last reported this machine (None: not reported in any round)."""

    @field_validator("error", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        if isinstance(value, str):
            return truncate_error(value, MAX_ERROR_LENGTH) or None
        return value

    @field_validator("updated")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_serializer("updated")
    def _ser_updated(self, value: datetime | None) -> str | None:
        return None if value is None else _rfc3339(value)


class ResultsDoc(_Model):
    """The document under ``results.json`` (see the module doc)."""

    version: int = RESULTS_VERSION
    round: int = Field(default=0, ge=0)
    """The round the document belongs to (0: no round started yet)."""
    started: datetime | None = None
    """When the operator started ``round``."""
    finished: datetime | None = None
    """When the operator folded ``round`` after its Job ended (None: not yet)."""
    done: bool = False
    """The round's Job wrote its last batch."""
    machines: dict[str, MachineResult] = Field(default_factory=dict)

    @field_validator("started", "finished")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_serializer("started", "finished")
    def _ser_time(self, value: datetime | None) -> str | None:
        return None if value is None else _rfc3339(value)

    def to_json(self) -> str:
        """Compact JSON (what goes under ``results.json``); None fields left out; at
        most ``MAX_RESULTS_BYTES`` for 5,000 machines (see ``MAX_RESULT_ERRORS``)."""
        text = self._dump()
        if len(text) <= MAX_RESULTS_BYTES:
            return text
        return self.without_errors(keep=MAX_RESULT_ERRORS)._dump()

    def _dump(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    def without_errors(self, keep: int) -> ResultsDoc:
        """The errors of all but ``keep`` entries dropped (failed first, then by name)."""
        with_error = sorted(
            (n for n, m in self.machines.items() if m.error is not None),
            key=lambda n: (self.machines[n].phase is not MachinePhase.FAILED, n),
        )
        machines = dict(self.machines)
        for name in with_error[keep:]:
            machines[name] = machines[name].model_copy(update={"error": None})
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
        return self.model_copy(update={"machines": {**self.machines, name: result}})
