"""The NodeTask resource as pydantic models.

Python names are snake_case; the wire names (aliases) are the camelCase fields of
the CRD. ``NodeTask.from_dict`` / ``to_dict`` convert from and to what the API
server speaks. Validation mirrors the CRD (``charts/penetrator/crds/``) and adds the checks the CRD
cannot afford (no two names for one IP). Messages name the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from penetrator.api.constants import (
    CONFIGMAP_NAME_ANNOTATION,
    DEFAULT_SSH_PORT,
    JOB_NAME_ANNOTATION,
    KIND,
    MAX_CONDITION_MESSAGE_LENGTH,
    MAX_ERROR_LENGTH,
    MAX_MACHINE_ENTRIES,
    MAX_MACHINES,
    MAX_MACHINES_WITH_ERROR,
    MAX_PLAN_BYTES,
    NAME_SUFFIX_ALPHABET,
    NAME_SUFFIX_LENGTH,
    NODE_LABEL,
    MachinePhase,
    TaskPhase,
)
from penetrator.api.packages import TaskPackages
from penetrator.api.templates import JoinTemplate
from penetrator.api.validation import (
    canonical_ip,
    check_dns1123_subdomain,
    check_machine_address,
    check_node_name,
    check_prefix,
)

_MAX_REPORTED = 5  # problems listed per field; the rest are counted


class _Model(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        use_enum_values=False,
        validate_default=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _problems(field: str, problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_REPORTED])
    more = len(problems) - _MAX_REPORTED
    return f"{field}: {shown}" + (f"; and {more} more" if more > 0 else "")


def is_generated_name(prefix: str, name: str) -> bool:
    """``name`` has the shape ``<prefix>-<6 lowercase letters or digits>``."""
    head, sep, suffix = name.rpartition("-")
    return (
        sep == "-"
        and head == prefix
        and len(suffix) == NAME_SUFFIX_LENGTH
        and all(c in NAME_SUFFIX_ALPHABET for c in suffix)
    )


# --- spec ---------------------------------------------------------------------


class NodeTaskSpec(_Model):
    """What to install. Exactly one of ``targetMachines`` (add new machines under
    generated names) or ``nodeNamesOverride`` (reinstall under exactly these names)
    is given by the user. The admission webhook writes the generated names of
    ``targetMachines`` into ``nodeNamesOverride`` on create and sets
    ``nodeNamesGenerated``, so a stored task may carry both, in that one shape (the
    mark set, every name ``<nodeNamePrefix>-<6 chars>``, the same addresses on both
    sides)."""

    node_name_prefix: StrictStr | None = Field(default=None, alias="nodeNamePrefix")
    target_machines: list[StrictStr] | None = Field(default=None, alias="targetMachines")
    node_names_override: dict[StrictStr, StrictStr] | None = Field(
        default=None, alias="nodeNamesOverride"
    )
    node_names_generated: StrictBool | None = Field(default=None, alias="nodeNamesGenerated")
    ssh_credential: StrictStr = Field(alias="sshCredential")
    proxy_node: StrictStr | None = Field(default=None, alias="proxyNode")
    ssh_port: StrictInt = Field(default=DEFAULT_SSH_PORT, alias="sshPort")
    join_template: JoinTemplate | None = Field(default=None, alias="joinTemplate")
    """An extension: the ready-made install template (None: the settings' template,
    by default edgeadm)."""
    packages: TaskPackages | None = Field(default=None, alias="packages")
    """An extension: where this task's join packages come from (None: the settings'
    ``packages``; given fields replace the settings' ones)."""

    @field_validator("node_name_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_prefix(value)) is not None:
            raise ValueError(f"nodeNamePrefix: {problem}")
        return value

    @field_validator("target_machines")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "targetMachines: the list is empty; list at least one IP address to install"
            )
        if len(value) > MAX_MACHINES:
            raise ValueError(
                f"targetMachines: {len(value)} addresses; at most {MAX_MACHINES} per task "
                "(split the machines over several NodeTasks)"
            )
        problems = [
            f"[{i}] {problem}"
            for i, ip in enumerate(value)
            if (problem := check_machine_address(ip))
        ]
        if problems:
            raise ValueError(_problems("targetMachines", problems))
        return value

    @field_validator("node_names_override")
    @classmethod
    def _override(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "nodeNamesOverride: the map is empty; give at least one `node-name: IP` entry"
            )
        if len(value) > MAX_MACHINES:
            raise ValueError(
                f"nodeNamesOverride: {len(value)} entries; at most {MAX_MACHINES} per task "
                "(split the machines over several NodeTasks)"
            )
        problems: list[str] = []
        owner: dict[str, str] = {}
        for name, ip in value.items():
            if (problem := check_node_name(name)) is not None:
                problems.append(f"name {problem}")
            if (problem := check_machine_address(ip)) is not None:
                problems.append(f"[{name}] {problem}")
                continue
            key = canonical_ip(ip)
            if key in owner:
                problems.append(
                    f"{ip} is given to both {owner[key]!r} and {name!r}; "
                    "one machine gets one name, remove one of them"
                )
            else:
                owner[key] = name
        if problems:
            raise ValueError(_problems("nodeNamesOverride", problems))
        return value

    @field_validator("ssh_credential")
    @classmethod
    def _credential(cls, value: str) -> str:
        if (problem := check_dns1123_subdomain(value)) is not None:
            raise ValueError(
                f"sshCredential: {problem}; name the Secret in namespace edge-system that "
                "holds key passwd or sshkey"
            )
        return value

    @field_validator("proxy_node")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value and (problem := check_dns1123_subdomain(value)) is not None:
            raise ValueError(
                f"proxyNode: {problem}; name a Node of the cluster, or leave it out to "
                "install from the control plane directly"
            )
        return value

    @field_validator("ssh_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"sshPort: {value} is out of range; use 1-65535 (22 if omitted)")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Self:
        targets, override = self.target_machines, self.node_names_override
        if targets is None and override is None:
            raise ValueError(
                "spec: give spec.targetMachines (IP addresses of machines to add) or "
                "spec.nodeNamesOverride (node name -> IP of machines to reinstall)"
            )
        if self.node_names_generated and (targets is None or override is None):
            raise ValueError(
                "spec.nodeNamesGenerated is set by the admission webhook only, together "
                "with the names it generates; leave it out"
            )
        if targets is not None and self.node_name_prefix is None:
            raise ValueError(
                "spec.nodeNamePrefix is required with spec.targetMachines: new nodes are "
                "named <nodeNamePrefix>-<6 random chars> (e.g. nodeNamePrefix: edge)"
            )
        if targets is not None and override is not None and not self._is_planned_shape():
            raise ValueError(
                "spec: give only one of spec.targetMachines (add machines under generated "
                "names) and spec.nodeNamesOverride (reinstall under these names), not both"
            )
        if (size := self.plan_bytes()) > MAX_PLAN_BYTES:
            raise ValueError(
                f"spec: the machines' names and addresses take {size} bytes; at most "
                f"{MAX_PLAN_BYTES} fit in one NodeTask (it is stored several times and must "
                "stay far below etcd's 1.5 MiB object limit): split the machines over "
                "several NodeTasks or use a shorter nodeNamePrefix"
            )
        return self

    def plan_bytes(self) -> int:
        """Sum of ``len(node name) + len(IP)`` over the planned machines (for an add
        task before names exist: with names of ``len(prefix) + 7`` characters)."""
        if self.node_names_override is not None:
            return sum(len(n) + len(ip) for n, ip in self.node_names_override.items())
        name_length = len(self.node_name_prefix or "") + 1 + NAME_SUFFIX_LENGTH
        return sum(name_length + len(ip) for ip in self.unique_machines())

    def _is_planned_shape(self) -> bool:
        """Both lists present as the webhook writes them (see the class docstring)."""
        prefix = self.node_name_prefix
        override = self.node_names_override or {}
        if (
            not self.node_names_generated
            or prefix is None
            or not all(is_generated_name(prefix, n) for n in override)
        ):
            return False
        return {canonical_ip(ip) for ip in override.values()} == {
            canonical_ip(ip) for ip in self.target_machines or []
        }

    def with_generated_names(self, names: Mapping[str, str]) -> NodeTaskSpec:
        """The spec as the webhook stores it: ``names`` (from ``generate_node_names``)
        written into ``nodeNamesOverride`` and ``nodeNamesGenerated`` set; validated."""
        data = self.to_dict() | {"nodeNamesOverride": dict(names), "nodeNamesGenerated": True}
        return NodeTaskSpec.model_validate(data)

    # --- views ---------------------------------------------------------------

    @property
    def needs_names(self) -> bool:
        """Names must still be generated (user input of an add task, before the webhook)."""
        return self.target_machines is not None and self.node_names_override is None

    @property
    def is_reinstall(self) -> bool:
        """The user named the nodes (reinstall), as opposed to an add task."""
        return self.target_machines is None

    @property
    def direct(self) -> bool:
        """No proxy node: the Job runs in the control plane."""
        return not self.proxy_node

    def unique_machines(self) -> list[str]:
        """``targetMachines`` without duplicates (first occurrence wins), canonical."""
        seen: dict[str, None] = {}
        for ip in self.target_machines or []:
            seen.setdefault(canonical_ip(ip), None)
        return list(seen)

    def plan(self) -> dict[str, str]:
        """Node name -> canonical IP of every machine planned; empty while names are
        still to be generated."""
        return {name: canonical_ip(ip) for name, ip in (self.node_names_override or {}).items()}


def user_spec_problems(spec: NodeTaskSpec) -> list[str]:
    """The stricter rule for a spec exactly as a user wrote it (before the webhook
    fills in names): both ``targetMachines`` and ``nodeNamesOverride`` is an error."""
    if spec.node_names_generated is not None:
        return [
            "spec.nodeNamesGenerated is set by the admission webhook only, together with "
            "the names it generates; leave it out"
        ]
    if spec.target_machines is not None and spec.node_names_override is not None:
        return [
            "spec: give only one of spec.targetMachines (add machines under generated "
            "names) and spec.nodeNamesOverride (reinstall under these names), not both"
        ]
    return []


# --- status -------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")
_TERMINAL_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b.?",  # any other escape (and a lone ESC)
    re.DOTALL,
)
_UNSAFE_CHARS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but tab and newline, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"  # bidi marks: text that reads reversed
)


def strip_control(text: str) -> str:
    """What a machine said, made safe to show: terminal escape sequences removed whole,
    every other control character (C0 but tab and newline, DEL, C1, bidi overrides)
    removed. Tabs and newlines stay (``truncate_error`` folds them into spaces)."""
    return _UNSAFE_CHARS.sub("", _TERMINAL_ESCAPE.sub("", text))


def machine_text(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """Text from a machine (its stderr in an error, a warning) as it enters a result:
    control characters stripped (``strip_control``), then one line (``truncate_error``)."""
    return truncate_error(strip_control(text), limit)


def truncate_error(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """One line of at most ``limit`` UTF-8 bytes (so also characters): whitespace runs
    collapsed, cut with '...' and never inside a character."""
    line = _WHITESPACE.sub(" ", text).strip()
    data = line.encode()
    if len(data) <= limit:
        return line
    return data[: limit - 3].decode("utf-8", "ignore").rstrip() + "..."


class MachineStatus(_Model):
    """One machine that is not yet joined: where it is, how often it was tried, and
    (for a bounded number of machines) the last error, shortened."""

    phase: MachinePhase
    attempts: int = Field(default=0, ge=0)
    last_error: str | None = Field(default=None, alias="lastError")

    @field_validator("last_error", mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        if isinstance(value, str):
            return machine_text(value) or None
        return value


_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(_Model):
    """A Kubernetes-style condition (``metav1.Condition``)."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = ""
    last_transition_time: datetime = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration", ge=0)

    @field_validator("message", mode="before")
    @classmethod
    def _short_message(cls, value: object) -> object:
        if isinstance(value, str):
            return truncate_error(value, MAX_CONDITION_MESSAGE_LENGTH)
        return value

    @field_validator("last_transition_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("lastTransitionTime: give a timezone-aware time (UTC)")
        return value.astimezone(UTC).replace(microsecond=0)

    @field_serializer("last_transition_time")
    def _rfc3339(self, value: datetime) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_rank(phase: MachinePhase) -> int:
    if phase is MachinePhase.FAILED:
        return 1
    if phase is MachinePhase.PENDING:
        return 2
    return 0


class NodeTaskStatus(_Model):
    """``nodetaskStatus`` and ``nodeStatus`` are compat; the rest is ours.

    ``machines`` lists only machines that are not joined (joined ones are counted in
    ``joined``), at most ``MAX_MACHINE_ENTRIES`` of them (in flight first, then failed,
    then pending; by name within each group); at most ``MAX_MACHINES_WITH_ERROR`` keep
    ``lastError`` (failed ones first). A 5,000-machine status stays a few hundred KiB;
    the counts cover every machine and every error is also an Event."""

    nodetask_status: TaskPhase | None = Field(default=None, alias="nodetaskStatus")
    node_status: dict[str, str] = Field(default_factory=dict, alias="nodeStatus")
    planned: int = Field(default=0, ge=0)
    joined: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    machines: dict[str, MachineStatus] = Field(default_factory=dict)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(default=None, alias="observedGeneration", ge=0)

    @field_validator("machines")
    @classmethod
    def _compact(cls, value: dict[str, MachineStatus]) -> dict[str, MachineStatus]:
        kept = {n: m for n, m in value.items() if m.phase is not MachinePhase.JOINED}
        if len(kept) > MAX_MACHINE_ENTRIES:
            order = sorted(kept, key=lambda n: (_entry_rank(kept[n].phase), n))
            chosen = set(order[:MAX_MACHINE_ENTRIES])
            kept = {n: m for n, m in kept.items() if n in chosen}
        with_error = [n for n, m in kept.items() if m.last_error is not None]
        if len(with_error) <= MAX_MACHINES_WITH_ERROR:
            return kept
        with_error.sort(key=lambda n: (kept[n].phase is not MachinePhase.FAILED, n))
        for name in with_error[MAX_MACHINES_WITH_ERROR:]:
            kept[name] = kept[name].model_copy(update={"last_error": None})
        return kept

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


# --- the resource ---------------------------------------------------------------


class ObjectMeta(_Model):
    """The part of ``metadata`` the operator uses."""

    name: str
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(default=None, alias="deletionTimestamp")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if (problem := check_dns1123_subdomain(value)) is not None:
            raise ValueError(f"metadata.name: {problem}")
        return value

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value


class NodeTask(_Model):
    api_version: Literal["nodetask.apps.superedge.io/v1beta1"] = Field(
        default="nodetask.apps.superedge.io/v1beta1", alias="apiVersion"
    )
    kind: Literal["NodeTask"] = KIND
    metadata: ObjectMeta
    spec: NodeTaskSpec
    status: NodeTaskStatus = Field(default_factory=NodeTaskStatus)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeTask:
        """Parse an object as the API server returns it; ``ValidationError`` if invalid
        (``validation_messages`` turns it into readable lines)."""
        return cls.model_validate(dict(data))

    @field_validator("status", mode="before")
    @classmethod
    def _no_status(cls, value: object) -> object:
        return {} if value is None else value

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def task_label(self) -> str | None:
        """This task's value of ``app.superedge.io/node-label`` (set by the webhook)."""
        return self.metadata.labels.get(NODE_LABEL)

    @property
    def job_name(self) -> str | None:
        """The Job (and its Role and RoleBinding) serving the task: ``nodetask-<uid>``,
        from the uid the API server gave it, never from a string a user may edit (the
        annotation ``app.superedge.io/job-name`` only shows it); None before the task
        is stored."""
        return object_name(self.metadata.uid) if self.metadata.uid else None

    @property
    def configmap_name(self) -> str | None:
        """The task's job-config ConfigMap: ``nodetask-<uid>`` (see ``job_name``)."""
        return object_name(self.metadata.uid) if self.metadata.uid else None

    @property
    def names_recorded(self) -> bool:
        """The annotations that show the object names are on the task."""
        notes = self.metadata.annotations
        return JOB_NAME_ANNOTATION in notes and CONFIGMAP_NAME_ANNOTATION in notes


OBJECT_NAME_PREFIX = "nodetask-"


def object_name(uid: str) -> str:
    """``nodetask-<uid>``: the name of the objects that serve the task of ``uid`` (45
    characters: a Job name fits a label value)."""
    return f"{OBJECT_NAME_PREFIX}{uid}"


def validation_messages(error: ValidationError) -> list[str]:
    """One readable line per problem, ``<field path>: <what is wrong and the fix>``."""
    lines: list[str] = []
    for item in error.errors(include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        path = _path(item["loc"])
        parent, _, leaf = path.rpartition(".")
        if message.startswith(("spec", "metadata", "status")):
            pass
        elif leaf and message.startswith((leaf + ":", leaf + "[")):
            message = f"{parent}.{message}" if parent else message
        elif path:
            message = f"{path}: {message}"
        lines.append(message)
    return lines


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out
