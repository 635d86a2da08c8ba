"""What a new task needs before its first round (pure): the task label value, the
names of its Job and ConfigMap, and node names for an add task.

The admission webhook normally does this on create; the operator does it too when
a task arrives without (no webhook installed), so the result is the same. The
randomness comes in as a ``random.Random``; the Job and ConfigMap names are derived
from the task's uid, so they are stable across operator restarts.
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
    """A merge patch for the task: labels, annotations and (add tasks) the names."""

    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    node_names: dict[str, str] | None = None
    """name -> IP to write into ``spec.nodeNamesOverride`` (with nodeNamesGenerated)."""

    def patch(self) -> dict[str, object]:
        body: dict[str, object] = {}
        meta: dict[str, object] = {}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        if meta:
            body["metadata"] = meta
        if self.node_names is not None:
            body["spec"] = {"nodeNamesOverride": dict(self.node_names), "nodeNamesGenerated": True}
        return body


def prepare(
    task: NodeTask, rng: random.Random, taken: Set[str] = frozenset()
) -> TaskPreparation | None:
    """What is missing on ``task`` (None: nothing). ``taken``: node names that
    generated names must avoid (names planned by other tasks; a collision with an
    existing Node is 1 in 2e9 per name and the install of such a name fails visibly)."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if not task.task_label:
        labels[NODE_LABEL] = task_label_value(task.name, rng)
    uid = task.metadata.uid or ""
    if not task.job_name:
        annotations[JOB_NAME_ANNOTATION] = default_job_name(task.name, uid)
    if not task.configmap_name:
        annotations[CONFIGMAP_NAME_ANNOTATION] = default_configmap_name(task.name, uid)
    names: dict[str, str] | None = None
    spec = task.spec
    if spec.needs_names:
        names = generate_node_names(spec.node_name_prefix or "", spec.unique_machines(), taken, rng)
    if not labels and not annotations and names is None:
        return None
    return TaskPreparation(labels, annotations, names)
