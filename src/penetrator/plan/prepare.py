"""A task's plan, decided once by one function (``decide_plan``): its node names (an
add task's ``<prefix>-<6 chars>``, none of them an existing Node), the value of its
label, and the annotations that show the names of its Job and ConfigMap (derived
from the task's uid, ``penetrator.api.models.object_name``).

The admission webhook calls it on create and writes the result into the task
(``spec.nodeNamesOverride`` with ``nodeNamesGenerated``, the label; compat). The
uid is given by the API server only after the mutating webhook, so the operator
writes the annotations on its first look at the task; without a webhook it calls the
same function then and patches the same fields the same way
(``TaskPlan.missing_from``: only what the task lacks; the CRD lets the names be
written exactly once, the admission policy only by the operator). From then on the
task itself carries its plan; nothing is recorded anywhere else.

Pure but for the Node lookups, which come in as a callback; the randomness comes in
as a ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    JOB_NAME_ANNOTATION,
    NODE_LABEL,
    NodeTask,
    NodeTaskSpec,
)
from penetrator.api.models import object_name
from penetrator.plan.names import NameGenerationError, generate_node_names, task_label_value

MAX_NAME_ROUNDS = 20
"""Rounds of regenerating names that collided with existing Nodes."""

OPERATOR_ANNOTATIONS = (JOB_NAME_ANNOTATION, CONFIGMAP_NAME_ANNOTATION)
"""Written by the operator from the task's uid; a new task's copies are removed."""

NodesExist = Callable[[list[str]], Awaitable[set[str]]]
"""Which of these node names exist as Nodes (looked up by name)."""


@dataclass(frozen=True)
class TaskPlan:
    """What ``decide_plan`` decided, as the fields of the task that carry it."""

    spec: dict[str, Any] = field(default_factory=dict)
    """``nodeNamesOverride`` + ``nodeNamesGenerated`` (an add task), and
    ``targetMachines`` when duplicates were removed."""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    """Annotations the patch removes (a new task's copies of the operator's)."""

    @property
    def node_names(self) -> dict[str, str]:
        """Generated node name -> IP (empty: the user named the nodes)."""
        return dict(self.spec.get("nodeNamesOverride") or {})

    def patch(self) -> dict[str, Any]:
        """The merge patch that writes the plan into the task."""
        body: dict[str, Any] = {}
        if self.spec:
            body["spec"] = dict(self.spec)
        meta: dict[str, Any] = {}
        if self.labels:
            meta["labels"] = dict(self.labels)
        if self.annotations or self.dropped:
            notes: dict[str, str | None] = dict.fromkeys(self.dropped)
            meta["annotations"] = notes | self.annotations
        if meta:
            body["metadata"] = meta
        return body

    def missing_from(self, task: NodeTask) -> TaskPlan:
        """Only what ``task`` lacks (set-once values are never replaced), and the spec's
        addresses left as they are (only the names may be added after create)."""
        spec = {k: v for k, v in self.spec.items() if k != "targetMachines"}
        return TaskPlan(
            spec if task.spec.needs_names else {},
            {k: v for k, v in self.labels.items() if k not in task.metadata.labels},
            {k: v for k, v in self.annotations.items() if k not in task.metadata.annotations},
        )


async def free_node_names(
    prefix: str, ips: list[str], nodes_exist: NodesExist, rng: random.Random
) -> dict[str, str]:
    """``<prefix>-<6 chars>`` -> IP for each address of ``ips``: distinct, and none of
    them an existing Node (names that collide are drawn again, only those)."""
    taken: set[str] = set()
    names = generate_node_names(prefix, ips, taken, rng)
    for _ in range(MAX_NAME_ROUNDS):
        existing = await nodes_exist(list(names))
        if not existing:
            return names
        taken |= existing
        kept = {n: ip for n, ip in names.items() if n not in existing}
        again = [ip for n, ip in names.items() if n in existing]
        names = kept | generate_node_names(prefix, again, taken | set(kept), rng)
    raise NameGenerationError(
        f"spec.nodeNamePrefix: no free node names with prefix {prefix!r} after "
        f"{MAX_NAME_ROUNDS} rounds; use another prefix"
    )


async def decide_plan(
    task_name: str,
    spec: NodeTaskSpec,
    rng: random.Random,
    nodes_exist: NodesExist,
    *,
    label: str | None = None,
    uid: str | None = None,
) -> TaskPlan:
    """The plan of a task named ``task_name`` (the stem of a generateName; '' when not
    known yet: no label or object names then) with ``spec``: node names for an add
    task, the label value (``label`` when the task has one already), and, once the
    task has its ``uid`` (after create: the operator), the annotations naming its Job
    and ConfigMap (``object_name(uid)``: never derived from a string a user may edit).
    The webhook, on create, removes any copies of those annotations. Raises
    ``ValueError`` (a bad prefix) and ``NameGenerationError``."""
    new_spec: dict[str, Any] = {}
    if spec.needs_names:
        machines = spec.unique_machines()
        if machines != spec.target_machines:
            new_spec["targetMachines"] = machines
        names = await free_node_names(spec.node_name_prefix or "", machines, nodes_exist, rng)
        new_spec |= {"nodeNamesOverride": names, "nodeNamesGenerated": True}
    if not task_name:
        return TaskPlan(new_spec)
    label = label or task_label_value(task_name, rng)
    if uid is None:
        return TaskPlan(new_spec, {NODE_LABEL: label}, dropped=OPERATOR_ANNOTATIONS)
    name = object_name(uid)
    annotations = {JOB_NAME_ANNOTATION: name, CONFIGMAP_NAME_ANNOTATION: name}
    return TaskPlan(new_spec, {NODE_LABEL: label}, annotations)


async def plan_missing(task: NodeTask, rng: random.Random, nodes_exist: NodesExist) -> TaskPlan:
    """The operator's side (no webhook planned ``task`` on create): ``decide_plan``,
    keeping a label the task has, and only the parts the task lacks."""
    plan = await decide_plan(
        task.name, task.spec, rng, nodes_exist, label=task.task_label, uid=task.metadata.uid
    )
    return plan.missing_from(task)


def needs_plan(task: NodeTask) -> bool:
    """The task lacks part of its plan (no webhook made it on create)."""
    return task.spec.needs_names or not task.task_label or not task.names_recorded


def records_names_once(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """``new`` is the spec ``old`` with generated names written in and nothing else
    changed: the one change of a spec after create (``TaskPlan.missing_from``)."""
    try:
        before, after = NodeTaskSpec.model_validate(old), NodeTaskSpec.model_validate(new)
    except (ValueError, TypeError):
        return False
    if not before.needs_names or after.needs_names or not after.node_names_generated:
        return False
    without = after.model_copy(update={"node_names_override": None, "node_names_generated": None})
    return without == before
