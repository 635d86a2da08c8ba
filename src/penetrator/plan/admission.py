"""The admission webhook's decisions (pure: dicts in, a patch or messages out).

On CREATE the mutating webhook (``mutate_create``) removes duplicate addresses,
writes generated node names into ``spec.nodeNamesOverride`` with the
``nodeNamesGenerated`` mark, sets the task's label value and the names of its Job
and ConfigMap; the validating webhook (``validate_create``) refuses what would
fail later: a missing or unusable credential Secret, an unknown proxy node, a
machine (or node name) another unfinished task is installing. On UPDATE
(``validate_update``) the spec and the values set at creation never change.

Every message starts with the field it is about and says how to fix it. The
facts the decisions need (the Secret's keys, whether the proxy node exists, the
other tasks) are looked up by the caller (``penetrator.k8s.admission``); node
names are checked through a callback, by name, never by listing all Nodes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from penetrator.api import (
    CONFIGMAP_NAME_ANNOTATION,
    CREDENTIAL_PASSWORD_KEY,
    CREDENTIAL_SSHKEY_KEY,
    JOB_NAME_ANNOTATION,
    NAMESPACE,
    NODE_LABEL,
    NodeTask,
    NodeTaskSpec,
    canonical_ip,
    check_dns1123_subdomain,
    user_spec_problems,
    validation_messages,
)
from penetrator.plan.addresses import (
    ClusterNetworks,
    cluster_address_problems,
    control_plane_problems,
    replaced_nodes,
)
from penetrator.plan.claims import held_machines, parse_tasks
from penetrator.plan.names import NameGenerationError
from penetrator.plan.prepare import NodesExist, TaskPlan, decide_plan, records_names_once

MAX_MESSAGES = 8
"""Problems reported in one refusal (the rest are counted)."""
SET_ONCE = (NODE_LABEL, JOB_NAME_ANNOTATION, CONFIGMAP_NAME_ANNOTATION)


class Denied(ValueError):
    """The request is refused; ``str()`` is the whole message, one line per problem
    joined by '; '."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_MESSAGES]
        more = len(self.problems) - len(shown)
        super().__init__("; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


# --- parsing ------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def task_base_name(obj: Mapping[str, Any]) -> str:
    """``metadata.name``, or for ``generateName`` its stem (the name is only chosen by
    the API server after admission); '' when neither is usable."""
    meta = _mapping(obj.get("metadata"))
    name = meta.get("name")
    if isinstance(name, str) and name:
        return name
    stem = meta.get("generateName")
    if isinstance(stem, str):
        stem = stem.rstrip("-.")
        if stem and check_dns1123_subdomain(stem) is None:
            return stem
    return ""


def parse_spec(obj: Mapping[str, Any]) -> NodeTaskSpec:
    """The task's spec, validated; ``Denied`` naming every bad field."""
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise Denied(["spec: missing or not an object; see `kubectl explain nodetask.spec`"])
    try:
        return NodeTaskSpec.model_validate(dict(spec))
    except ValidationError as e:
        raise Denied(in_spec(validation_messages(e))) from None
    except (TypeError, ValueError) as e:  # hostile shapes pydantic does not wrap
        raise Denied([f"spec: {e}"]) from None


def in_spec(messages: list[str]) -> list[str]:
    """Field paths from the root of the object (``spec.targetMachines: ...``)."""
    return [m if m.startswith(("spec", "metadata")) else f"spec.{m}" for m in messages]


# --- mutating: CREATE ---------------------------------------------------------------


Mutation = TaskPlan
"""What the mutating webhook changes: the task's plan (``decide_plan``), written in."""


async def mutate_create(
    obj: Mapping[str, Any], nodes_exist: NodesExist, rng: random.Random
) -> Mutation:
    """The patch for a new task as the user wrote it; ``Denied`` if it is not
    acceptable as user input (both lists, the webhook's mark set, bad fields)."""
    spec = parse_spec(obj)
    if problems := user_spec_problems(spec):
        raise Denied(problems)
    try:
        # Label and annotations always ours on create: a copied label or annotation
        # would make this task take another task's Nodes, Job or ConfigMap for its own.
        plan = await decide_plan(task_base_name(obj), spec, rng, nodes_exist)
    except NameGenerationError as e:
        raise Denied([str(e)]) from None
    if plan.spec:
        # the stored shape must be acceptable (the CRD's rules say the same)
        try:
            NodeTaskSpec.model_validate(spec.to_dict() | plan.spec)
        except ValidationError as e:
            raise Denied(in_spec(validation_messages(e))) from None
    return plan


# --- validating: CREATE -------------------------------------------------------------


@dataclass(frozen=True)
class CreateFacts:
    """What the cluster says about a new task's references.

    ``credential_keys``: key -> value length of the Secret ``edge-system/<sshCredential>``
    (None: no such Secret). ``proxy_node_exists``: None when no proxy node is given.
    ``tasks``: name -> body of the other NodeTasks (one list)."""

    credential_keys: Mapping[str, int] | None
    proxy_node_exists: bool | None
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cluster: ClusterNetworks | None = None
    """The cluster's networks and Nodes (None: not looked up; no address checks)."""
    allow_control_plane: bool = False
    """The setting ``webhook.allowControlPlaneNodes``."""


def credential_problems(secret: str, keys: Mapping[str, int] | None) -> list[str]:
    field_ = "spec.sshCredential"
    create = (
        f"create it: penetrator credential create {secret} --password-file FILE (or "
        f"--key-file FILE), or kubectl -n {NAMESPACE} create secret generic {secret} "
        f"--from-file={CREDENTIAL_PASSWORD_KEY}=FILE"
    )
    if keys is None:
        return [f"{field_}: Secret {NAMESPACE}/{secret} does not exist; {create}"]
    has = [k for k in (CREDENTIAL_PASSWORD_KEY, CREDENTIAL_SSHKEY_KEY) if k in keys]
    if not has:
        found = ", ".join(sorted(keys)[:10]) or "no keys"
        return [
            f"{field_}: Secret {NAMESPACE}/{secret} has neither key {CREDENTIAL_PASSWORD_KEY} "
            f"(root password) nor {CREDENTIAL_SSHKEY_KEY} (private key), it has: {found}; "
            f"{create}"
        ]
    if len(has) == 2:
        return [
            f"{field_}: Secret {NAMESPACE}/{secret} has both keys {CREDENTIAL_PASSWORD_KEY} and "
            f"{CREDENTIAL_SSHKEY_KEY}; keep exactly one (the login to use)"
        ]
    if keys[has[0]] == 0:
        return [
            f"{field_}: key {has[0]} of Secret {NAMESPACE}/{secret} is empty; put the "
            f"{'root password' if has[0] == CREDENTIAL_PASSWORD_KEY else 'private key'} in it"
        ]
    return []


def conflict_problems(
    me: str, plan: Mapping[str, str], field_: str, tasks: Mapping[str, NodeTask]
) -> list[str]:
    """Machines (and node names) of ``plan`` (name -> IP) that another unfinished task
    holds (``held_machines``): one message per other task, naming it."""
    mine_by_ip = {canonical_ip(ip): name for name, ip in plan.items()}
    problems: list[str] = []
    for other in sorted(tasks):
        task = tasks[other]
        if other == me:
            continue
        theirs = held_machines(task)
        ips = sorted(ip for ip in theirs if ip in mine_by_ip)
        names = sorted(
            n for ip, n in theirs.items() if n is not None and n in plan and ip not in mine_by_ip
        )
        if not ips and not names:
            continue
        phase = task.status.nodetask_status
        state = phase.value if phase is not None else "not started"
        if task.metadata.deletion_timestamp is not None:
            state = "being deleted"
        problems.append(_conflict_message(field_, other, state, ips, names))
    return problems


def _conflict_message(field_: str, other: str, state: str, ips: list[str], names: list[str]) -> str:
    what = []
    if ips:
        shown = ", ".join(ips[:5]) + (f" and {len(ips) - 5} more" if len(ips) > 5 else "")
        what.append(f"machine{'s' if len(ips) > 1 else ''} {shown}")
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        what.append(f"node name{'s' if len(names) > 1 else ''} {shown}")
    return (
        f"{field_}: {' and '.join(what)} {'is' if len(ips) + len(names) == 1 else 'are'} "
        f"being installed by NodeTask {other!r} ({state}); a machine is installed by one "
        f"task at a time: wait until {other!r} is ready or failed (kubectl get nt {other}), "
        "or leave these machines out"
    )


def validate_create(obj: Mapping[str, Any], facts: CreateFacts) -> list[str]:
    """Problems of a new task as it will be stored (after the mutating webhook)."""
    try:
        spec = parse_spec(obj)
    except Denied as e:
        return e.problems
    problems = credential_problems(spec.ssh_credential, facts.credential_keys)
    if spec.proxy_node and facts.proxy_node_exists is False:
        problems.append(
            f"spec.proxyNode: there is no Node {spec.proxy_node!r} in the cluster; name a Node "
            "inside the machines' network that can reach them by SSH (kubectl get nodes), or "
            "leave proxyNode out to install from the control plane directly"
        )
    plan = spec.plan() or {ip: ip for ip in spec.unique_machines()}
    field_ = "spec.nodeNamesOverride" if spec.is_reinstall else "spec.targetMachines"
    if facts.cluster is not None:
        problems += cluster_address_problems(field_, plan, facts.cluster, spec.is_reinstall)
        if spec.is_reinstall:
            replaced = replaced_nodes(plan, facts.cluster)
            problems += control_plane_problems(
                field_, replaced, facts.cluster, facts.allow_control_plane
            )
    me = _mapping(obj.get("metadata")).get("name")
    problems += conflict_problems(str(me or ""), plan, field_, parse_tasks(facts.tasks))
    return problems


# --- validating: the requester's rights -----------------------------------------------


@dataclass(frozen=True)
class Right:
    """One thing the task makes the operator do that its author must be allowed to do
    (asked of the API server by a SubjectAccessReview for the requester)."""

    verb: str
    resource: str
    name: str
    namespace: str | None
    field: str
    why: str

    @property
    def text(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} on {self.resource}/{self.name}{where}"


def rights_needed(spec: NodeTaskSpec, cluster: ClusterNetworks | None) -> list[Right]:
    """What the author of a task with ``spec`` must be allowed: get on its credential
    Secret (the operator reads it for the task), and for a reinstall delete on every
    existing Node it replaces (``replaced_nodes``: by name or by address)."""
    needed = [
        Right(
            "get",
            "secrets",
            spec.ssh_credential,
            NAMESPACE,
            "spec.sshCredential",
            "the task uses the login it holds; name a credential Secret you may read",
        )
    ]
    if spec.is_reinstall and cluster is not None:
        for node, why in sorted(replaced_nodes(spec.plan(), cluster).items()):
            needed.append(
                Right(
                    "delete",
                    "nodes",
                    node,
                    None,
                    "spec.nodeNamesOverride",
                    f"the task replaces Node {node} ({why})",
                )
            )
    return needed


def rights_problems(user: str, missing: Iterable[Right]) -> list[str]:
    """One message per right ``user`` lacks, naming the field and the right."""
    return [
        f"{r.field}: {user or 'the requester'} may not {r.verb} "
        f"{'Secret ' + NAMESPACE + '/' if r.resource == 'secrets' else 'Node '}{r.name} "
        f"(missing right: {r.text}); {r.why}"
        for r in missing
    ]


@dataclass
class RecentAdmissions:
    """Tasks this webhook admitted a moment ago that a list may not show yet (storing
    follows admission within milliseconds): their machines count as taken, so two tasks
    created at once for one machine are not both admitted by this process. An entry
    goes once a list shows the task (the list is the truth from then on), or once a
    list started ``settle`` seconds after the admission does not show it (the create
    failed after admission, or the task is already gone)."""

    settle: float = 1.0
    entries: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def record(self, obj: Mapping[str, Any], now: float) -> None:
        name = _mapping(obj.get("metadata")).get("name")
        if isinstance(name, str) and name:
            body = {"metadata": {"name": name}, "spec": dict(_mapping(obj.get("spec")))}
            self.entries[name] = (now, body)

    def with_listed(
        self, listed: Mapping[str, Mapping[str, Any]], list_started: float
    ) -> dict[str, Mapping[str, Any]]:
        """``listed`` plus the recent admissions it cannot have seen yet."""
        for name in [
            n
            for n, (at, _) in self.entries.items()
            if n in listed or list_started - at > self.settle
        ]:
            del self.entries[name]
        out: dict[str, Mapping[str, Any]] = dict(listed)
        for name, (_, body) in self.entries.items():
            out.setdefault(name, body)
        return out


# --- validating: UPDATE -------------------------------------------------------------


def validate_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The spec never changes after creation (but for the generated names written in
    once, when no webhook did on create); the task label and the Job/ConfigMap
    annotations, once set, keep their values."""
    problems: list[str] = []
    old_spec, new_spec = old.get("spec"), new.get("spec")
    if old_spec != new_spec and not (
        isinstance(old_spec, Mapping)
        and isinstance(new_spec, Mapping)
        and records_names_once(old_spec, new_spec)
    ):
        problems.append(
            "spec: is immutable once the NodeTask is created; to install other machines or "
            "change settings, create a new NodeTask (delete this one first if it is still "
            "creating)"
        )
    old_meta, new_meta = _mapping(old.get("metadata")), _mapping(new.get("metadata"))
    for key in SET_ONCE:
        where = "labels" if key == NODE_LABEL else "annotations"
        before = _mapping(old_meta.get(where)).get(key)
        after = _mapping(new_meta.get(where)).get(key)
        if before is not None and after != before:
            problems.append(
                f"metadata.{where}[{key}]: is set once when the task is created and identifies "
                f"what belongs to it; keep it as {before!r}"
            )
    return problems
