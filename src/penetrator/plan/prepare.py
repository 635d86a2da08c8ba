"""What a new task needs before its first round (pure): the task label value, the
names of its Job and ConfigMap, and node names for an add task.

The admission webhook normally does this on create (writing the generated names
into ``spec.nodeNamesOverride``). Without a webhook the operator does it: label and
annotations go on the task (metadata is mutable), but the spec is immutable after
create (a CEL rule), so the generated names are recorded once in the task's results
ConfigMap (``initial_results``) and read back from there (``planned_machines``): the
plan never changes for the life of the task. The randomness comes in as a
``random.Random``; the Job and ConfigMap names are derived from the task's uid, so
they are stable across operator restarts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Set
from dataclasses import dataclass, field

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    NodeTask,
)
from penetrator.api.results import MachineResult, ResultsDoc
from penetrator.plan.names import generate_node_names, task_label_value

_NAME_HEAD = 40  # of the task name in generated object names (Job names: <= 63)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def default_job_name(task_name: str, uid: str) -> str:
    """``<task>-job-<6 hex of the uid>``: at most 51 characters (the Job controller
    puts the Job name into a label value of its pods, so it must stay <= 63)."""
    return f"{task_name[:_NAME_HEAD].rstrip('-.')}-job-{_short_hash(uid or task_name)}"


def default_configmap_name(task_name: str, uid: str) -> str:
    """``<task>-config-<6 hex of the uid>``."""
    return f"{task_name[:_NAME_HEAD].rstrip('-.')}-config-{_short_hash(uid or task_name)}"


@dataclass(frozen=True)
class TaskPreparation:
    """A merge patch for the task's metadata: labels and annotations."""

    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def patch(self) -> dict[str, object]:
        body: dict[str, object] = {}
        meta: dict[str, object] = {}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if meta:
            body["metadata"] = meta
        return body


def prepare(task: NodeTask, rng: random.Random) -> TaskPreparation | None:
    """What is missing on ``task``'s metadata (None: nothing)."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if not task.task_label:
        labels[NODE_LABEL] = task_label_value(task.name, rng)
    uid = task.metadata.uid or ""
    if not task.job_name:
        annotations[JOB_NAME_ANNOTATION] = default_job_name(task.name, uid)
    if not task.configmap_name:
        annotations[CONFIGMAP_NAME_ANNOTATION] = default_configmap_name(task.name, uid)
    if not labels and not annotations:
        return None
    return TaskPreparation(labels, annotations)


def planned_machines(task: NodeTask, results: ResultsDoc | None) -> dict[str, str]:
    """name -> IP of every planned machine: ``spec.nodeNamesOverride``, or for an add
    task without webhook the names recorded in the results document; empty while
    names are still to be generated."""
    spec = task.spec
    if not spec.needs_names:
        return spec.plan()
    if results is None:
        return {}
    by_ip = {entry.ip: name for name, entry in results.machines.items()}
    targets = spec.unique_machines()
    if not all(ip in by_ip for ip in targets):
        return {}
    return {by_ip[ip]: ip for ip in targets}


def initial_results(
    task: NodeTask, rng: random.Random, taken: Set[str] = frozenset()
) -> ResultsDoc | None:
    """For an add task whose names are not generated yet (no webhook): the results
    document recording generated names (round 0, nothing tried). None when the plan
    is already known. ``taken``: names to avoid (planned by other tasks; a collision
    with an existing Node is 1 in 2e9 per name, and the job's stale-Node check keeps
    it from silently taking over a Node of another task)."""
    if not task.spec.needs_names:
        return None
    names = generate_node_names(
        task.spec.node_name_prefix or "", task.spec.unique_machines(), taken, rng
    )
    return ResultsDoc(machines={n: MachineResult(ip=ip) for n, ip in names.items()})
