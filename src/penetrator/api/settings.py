"""The operator's settings: one typed, versioned tree, read once at start-up.

``penetrator operator --config FILE`` reads a document of this shape (the chart:
the ConfigMap ``edge-system/penetrator-settings``, mounted into the operator's
pod), applies the few per-deployment environment variables (``ENV_OVERRIDES``)
and the command line's options on top, and validates the result before anything
starts: a bad value stops the operator with every problem's field path named.

The tree is passed explicitly (operator -> Runtime -> builders); the Job gets
what it needs from the config document the operator builds (``job:`` are the
defaults of every job config). Pure: no I/O, no environment read here (the
caller hands over the parsed document and the environment).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from penetrator.api.jobconfig import JobDefaults
from penetrator.api.packages import PackageSettings
from penetrator.api.validation import (
    check_dns1123_label,
    check_dns1123_subdomain,
)

SETTINGS_API_VERSION: Final = "penetrator.superedge.io/v1alpha1"
SETTINGS_KIND: Final = "Settings"
DEFAULT_PACKAGES: Final = {
    "amd64": "/var/lib/penetrator/packages/amd64.tar.gz",
    "arm64": "/var/lib/penetrator/packages/arm64.tar.gz",
}
"""Where the install packages are on the Job's filesystem unless ``job.packages``
says otherwise."""

ENV_OVERRIDES: Final[Mapping[str, tuple[str, ...]]] = {
    "PENETRATOR_IDENTITY": ("identity",),
    "PENETRATOR_IMAGE": ("jobPod", "image"),
    "PENETRATOR_API_SERVER": ("apiServer",),
    "PENETRATOR_METRICS_PORT": ("metricsPort",),
    "PENETRATOR_HEALTH_ENDPOINT": ("healthEndpoint",),
}
"""The few settings a deployment sets per replica or per cluster, from the
environment (over the file; the command line's options win over both). Empty
values are ignored. The identity falls back to ``$HOSTNAME`` (the pod's name)."""


class SettingsError(ValueError):
    """The settings are invalid; ``problems`` name each field (path: message)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings: " + "; ".join(problems))
        self.problems = problems


def _check(problem: str | None, what: str = "") -> None:
    if problem:
        raise ValueError(f"{what}{problem}")


class _Group(BaseModel):
    """camelCase keys in the document (as Kubernetes objects), snake_case in Python;
    unknown keys are errors."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class LeaseSettings(_Group):
    """The Lease that lets exactly one replica act."""

    name: str = "penetrator-operator"
    """The Lease's name (in edge-system)."""
    duration_seconds: float = Field(default=15.0, gt=1, le=600)
    """A holder that has not renewed for this long loses the Lease to another replica."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check(check_dns1123_subdomain(v))
        return v


class ReconcileSettings(_Group):
    """Rounds: how often a task is looked at, how many Jobs may try a machine."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    """Rounds that may try one machine; then it is ``failed``."""
    backoff_base: float = Field(default=30.0, ge=0, le=3600)
    """Seconds between round 1 and round 2; doubles each round."""
    backoff_max: float = Field(default=600.0, ge=0, le=24 * 3600)
    """The longest wait between two rounds."""
    poll_interval: float = Field(default=10.0, gt=0, le=600)
    """Seconds between looks at a task whose Job runs (Job events usually come first)."""
    start_timeout: float = Field(default=300.0, ge=10, le=24 * 3600)
    """A round whose Job has written nothing this long after the round started is
    given up (Job deleted, an attempt counted): its pod never started (image pull,
    volume, scheduling trouble). The job writes its first batch within seconds."""
    deletion_poll: float = Field(default=2.0, gt=0, le=60)
    """Seconds between looks while a finished round's Job is being deleted."""

    def backoff(self, finished_round: int) -> float:
        """Seconds to wait after ``finished_round`` before the next round."""
        if finished_round <= 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_base * 2 ** (finished_round - 1)))


class TokenSettings(_Group):
    """The bootstrap tokens the machines join with: one per task and round, made when
    the round starts, valid for the Job's deadline and ``marginSeconds``, removed with
    the task (ownerReference) and by the token cleaner when expired."""

    margin_seconds: int = Field(default=600, ge=60, le=24 * 3600)
    """How long a token outlives its round's Job deadline (a join that started just
    before the deadline still finishes its TLS bootstrap)."""

    def ttl_seconds(self, deadline_seconds: int) -> int:
        """A round's token lifetime: the Job's deadline and the margin."""
        return deadline_seconds + self.margin_seconds


class JobPodSettings(_Group):
    """How the operator makes each round's Job (its pod; what the job does is ``job``)."""

    image: str = Field(default="penetrator:latest", min_length=1, max_length=512)
    """The image of the install Job (the same as the operator's)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    command: tuple[str, ...] = Field(default=("penetrator",), min_length=1, max_length=16)
    """argv before ``job ...``: the image's ``penetrator``."""
    deadline_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    """The Job's activeDeadlineSeconds: a round that runs longer is stopped."""
    report: bool = True
    """The job writes its results into the task's results ConfigMap (off: only a job
    without that option, e.g. an older image)."""
    cloud_node_label: str = "node-role.kubernetes.io/control-plane"
    """A task without proxy node: its Job runs on a node with this label."""
    run_as_user: int = Field(default=65532, ge=1, le=2**31 - 1)
    """The Job's user and group (the image's non-root user). The Job runs as root only
    when ``job.httpPort`` is below 1024 (binding it needs NET_BIND_SERVICE)."""
    # Memory: the benchmark (bench/results/job.csv) measured the job's RSS at about
    # 76 MiB + 0.04 MiB per machine by HTTP (113 MiB at 1,000) and 155 MiB + 0.23 MiB
    # per machine by SFTP (200 MiB at 200). The defaults sit above the SFTP line
    # (256 MiB + 0.25 MiB a machine) and the limit is twice the request: one sandbox
    # measurement is no promise, and an OOM kill loses the round.
    memory_base_mib: int = Field(default=256, ge=32, le=65536)
    """The Job's memory request for a task of no machine (MiB); the limit is twice the request."""
    memory_per_machine_kib: int = Field(default=256, ge=0, le=65536)
    """Memory request added per machine of the task (KiB)."""
    memory_max_mib: int = Field(default=2048, ge=32, le=262144)
    """The memory request's cap (MiB), so a huge task's Job still fits a proxy node."""
    # CPU: the job used 0.07 cores on average for 1,000 machines by HTTP and 0.2 for
    # 200 by SFTP (SSH handshakes come in bursts): the limit is four times the
    # request, so bursts are throttled rather than starved.
    cpu_base_millicores: int = Field(default=100, ge=10, le=64000)
    """The Job's CPU request for a task of no machine (millicores); the limit is four times it."""
    cpu_per_machine_millicores: float = Field(default=0.5, ge=0, le=1000)
    """CPU request added per machine of the task (millicores)."""
    cpu_max_millicores: int = Field(default=1000, ge=10, le=64000)
    """The CPU request's cap (millicores)."""

    def memory_request_mib(self, machines: int) -> int:
        """The memory request for a task of ``machines`` machines (MiB)."""
        wanted = self.memory_base_mib + -(-max(machines, 0) * self.memory_per_machine_kib // 1024)
        return min(self.memory_max_mib, wanted)

    def cpu_request_millicores(self, machines: int) -> int:
        """The CPU request for a task of ``machines`` machines (millicores)."""
        wanted = self.cpu_base_millicores + self.cpu_per_machine_millicores * max(machines, 0)
        return min(self.cpu_max_millicores, round(wanted))

    @field_validator("command")
    @classmethod
    def _command(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not arg or "\0" in arg for arg in v):
            raise ValueError("an argument is empty or holds NUL")
        return v


class JobSettings(JobDefaults):
    """The defaults of every job config (what ``penetrator job`` does per machine);
    the task's facts (machines, port, label, cluster endpoint) come on top. Field
    by field as in ``penetrator.api.jobconfig.JobDefaults``, except the packages'
    default."""

    packages: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PACKAGES))
    kubernetes_version: str | None = Field(  # type: ignore[assignment]
        default=None, alias="kubernetesVersion"
    )
    """The version the machines join as (the template's {kubernetes_version}) and whose
    packages they get; null: the cluster's (the API server's /version)."""


class WebhookSettings(_Group):
    """The admission webhook the operator serves (the chart's templates/webhook.yaml)."""

    enabled: bool = False
    """Serve it (the chart does; an operator run from a laptop or a test does not)."""
    port: int = Field(default=9443, ge=1, le=65535)
    """HTTPS port of the operator's pod (the Service's targetPort)."""
    service: str = "penetrator-webhook"
    """The Service in edge-system the API server calls."""
    tls_secret: str = "penetrator-webhook-tls"  # noqa: S105 (a Secret's name)
    """The Secret in edge-system that keeps the generated CA and serving certificate."""
    configuration: str = "penetrator.nodetask.apps.superedge.io"
    """Name of both webhook configurations (their caBundle is written at start-up)."""
    renew_check_seconds: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    """How often the certificate is checked (renewed when under 30 days are left)."""
    node_check_seconds: float = Field(default=5.0, gt=0, le=9)
    """Time for Node lookups by name on create; the rest by hostname label (the
    webhook's timeout is 10 s)."""
    allow_control_plane_nodes: bool = False
    """A reinstall may replace a control-plane Node (one labelled
    node-role.kubernetes.io/control-plane or .../master); off: such a task is refused."""

    @field_validator("service", "tls_secret")
    @classmethod
    def _names(cls, v: str) -> str:
        _check(check_dns1123_label(v))
        return v

    @field_validator("configuration")
    @classmethod
    def _configuration(cls, v: str) -> str:
        _check(check_dns1123_subdomain(v))
        return v


class Settings(_Group):
    """Everything the operator is told: ``apiVersion: penetrator.superedge.io/v1alpha1``,
    ``kind: Settings``; every field has a default (pinned by
    tests/unit/testdata/settings-defaults.yaml)."""

    api_version: Literal["penetrator.superedge.io/v1alpha1"] = SETTINGS_API_VERSION
    kind: Literal["Settings"] = SETTINGS_KIND
    kubeconfig: Path | None = None
    """Cluster access; null: in-cluster (the pod's service account)."""
    context: str | None = None
    """The kubeconfig's context (null: its current one)."""
    identity: str = Field(default="", max_length=128)
    """This replica's name in the Lease and in Events; empty: ``$HOSTNAME`` (the pod's
    name), else ``pid-<pid>``."""
    field_manager: str = Field(default="penetrator-operator", min_length=1, max_length=128)
    """The operator's server-side-apply field manager."""
    api_server: str | None = None
    """``https://host:port`` the machines join, instead of cluster-info's server (when
    the machines reach the API server at another address)."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Prometheus metrics port (0: none)."""
    health_endpoint: str | None = "http://0.0.0.0:8081/healthz"
    """Liveness and readiness URL served (null or "off": none)."""
    lease: LeaseSettings = Field(default_factory=LeaseSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    token: TokenSettings = Field(default_factory=TokenSettings)
    job_pod: JobPodSettings = Field(default_factory=JobPodSettings)
    job: JobSettings = Field(default_factory=JobSettings)
    packages: PackageSettings = Field(default_factory=PackageSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("health_endpoint", "api_server", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("api_server")
    @classmethod
    def _api_server(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https://[^/\s]+(:[0-9]{1,5})?/?", v):
            raise ValueError(f"{v[:80]!r} is not https://host:port")
        return v

    @field_validator("health_endpoint")
    @classmethod
    def _health(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^/\s]+:[0-9]{1,5}/\S*", v):
            raise ValueError(f"{v[:80]!r} is not http://host:port/path (or off)")
        return v


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if data.get(key) is None:
            data[key] = {}
        inner = data[key]
        if not isinstance(inner, dict):
            return  # a scalar where a group belongs: validation names that
        data = inner
    data[path[-1]] = value


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(the document)"


def load_settings(
    document: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
    source: str = "settings",
) -> Settings:
    """The settings from ``document`` (the parsed file; None: all defaults), then the
    ``ENV_OVERRIDES`` found in ``env``, then ``overrides`` (path -> value, the command
    line's options; None values are ignored). ``SettingsError`` names every bad field
    by its path (and the variable it came from)."""
    if document is not None and not isinstance(document, Mapping):
        raise SettingsError([f"{source}: must be a mapping (apiVersion, kind, ...)"])
    data: dict[str, Any] = _plain(document or {})
    origin: dict[tuple[str, ...], str] = {}
    env = env or {}
    for variable, path in ENV_OVERRIDES.items():
        if env.get(variable):
            _set(data, path, env[variable])
            origin[path] = variable
    if not data.get("identity") and env.get("HOSTNAME"):
        data["identity"] = env["HOSTNAME"]
    for path, value in (overrides or {}).items():
        if value is not None:
            _set(data, path, value)
            origin[path] = "the command line"
    try:
        return Settings.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(str(x) for x in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            came = f" (from {origin[loc]})" if loc in origin else f" (in {source})"
            problems.append(f"{_where(err['loc'])}: {message}{came}")
        raise SettingsError(problems) from None


def _plain(value: Any) -> Any:
    """A deep copy of the document as dicts and lists (ours to change)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
