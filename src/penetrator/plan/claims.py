"""Which machines a task holds: no machine is installed by two tasks at once.

One answer for the operator (an older unfinished task's machines wait:
``older_claims``) and for the admission webhook (a new task that wants a held
machine is refused: ``penetrator.plan.admission.conflict_problems``). Pure, over
typed NodeTasks; ``parse_tasks`` turns API bodies into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from penetrator.api import NodeTask, TaskPhase, canonical_ip

_EPOCH = datetime.min.replace(tzinfo=UTC)


def is_unfinished(task: NodeTask) -> bool:
    """Neither ready nor failed (also: not started yet)."""
    return task.status.nodetask_status not in (TaskPhase.READY, TaskPhase.FAILED)


def held_machines(task: NodeTask) -> dict[str, str | None]:
    """canonical IP -> node name (None: not named yet) of the machines ``task`` holds:
    none once it is ready or failed; ``status.nodeStatus`` (the machines not yet
    installed) once the operator wrote its plan into the status (``planned``); before
    that its whole plan (names from ``spec.nodeNamesOverride``, addresses of
    ``spec.targetMachines`` not named yet)."""
    if not is_unfinished(task):
        return {}
    status = task.status
    if status.planned > 0 or status.node_status:
        return {canonical_ip(ip): name for name, ip in status.node_status.items()}
    held: dict[str, str | None] = {ip: name for name, ip in task.spec.plan().items()}
    for ip in task.spec.unique_machines():
        held.setdefault(ip, None)
    return held


def _age(task: NodeTask) -> tuple[datetime, str]:
    """Older first: creation time (none yet: oldest), then name."""
    return (task.metadata.creation_timestamp or _EPOCH, task.name)


def older_claims(tasks: Iterable[NodeTask], me: NodeTask) -> dict[str, str]:
    """canonical IP -> name of an older unfinished task that holds the machine: those
    machines of ``me`` wait for it (the older of two tasks goes first)."""
    claims: dict[str, str] = {}
    for other in sorted(tasks, key=_age):
        if other.name == me.name or _age(other) >= _age(me):
            continue
        for ip in held_machines(other):
            claims.setdefault(ip, other.name)
    return claims


def parse_tasks(bodies: Mapping[str, Mapping[str, Any]]) -> dict[str, NodeTask]:
    """name -> NodeTask of the bodies that are NodeTasks (the API server validated
    them against the CRD, which the model mirrors; anything else is left out)."""
    out: dict[str, NodeTask] = {}
    for name, body in bodies.items():
        try:
            out[name] = NodeTask.from_dict(body)
        except (ValidationError, TypeError, ValueError):
            continue
    return out
