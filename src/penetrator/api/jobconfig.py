"""The job config: what the operator puts in a task's ConfigMap for `penetrator job`.

It holds no secret. The bootstrap token, the SSH password or key and the user's
``known_hosts`` come as files in the credentials directory (see
``penetrator.job.credentials``).

Every value that can end up on a remote command line is validated here, before
anything runs: node names (DNS-1123), IPs (``check_ip``), the API server
endpoint, the CA hash, the label value, paths (a small safe alphabet), template
variables (a small safe alphabet). The install template is a list of argv lists
whose arguments may contain ``{variable}`` placeholders; each argument is
substituted as a whole and the argv is then ``shlex.join``-ed, so no value is
ever unquoted (see ``penetrator.job.template``).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from penetrator.api.constants import (
    DEFAULT_SSH_PORT,
    MAX_MACHINES,
    NAMESPACE,
)
from penetrator.api.packages import UrlPackage
from penetrator.api.validation import (
    canonical_ip,
    check_dns1123_label,
    check_dns1123_subdomain,
    check_ip,
    check_label_value,
    check_node_name,
)

ARCHES: Final = ("amd64", "arm64")
"""Package architectures; ``uname -m`` x86_64 -> amd64, aarch64 -> arm64."""
UNAME_TO_ARCH: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

PLACEHOLDER_RE: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
SAFE_VALUE_RE: Final = re.compile(r"^[A-Za-z0-9._:/=@+,%-]*$")
"""User template variables: no shell metacharacter, no whitespace, no quote."""
SAFE_PATH_RE: Final = re.compile(r"^[A-Za-z0-9._/-]+$")
CA_HASH_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
VERSION_RE: Final = re.compile(r"^v?[0-9]+\.[0-9]+(\.[0-9]+)?([-+][0-9A-Za-z.-]+)?$")
VARIABLE_NAME_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
MAX_VALUE_LENGTH: Final = 256
MAX_PATH_LENGTH: Final = 200
MAX_TEMPLATE_COMMANDS: Final = 20
MAX_TEMPLATE_ARGS: Final = 64

BUILTIN_VARIABLES: Final = frozenset(
    {
        "node_name",
        "node_ip",
        "arch",
        "api_server",
        "api_server_host",
        "api_server_port",
        "ca_cert_hash",
        "kubernetes_version",
        "task_label",
        "work_dir",
        "package_dir",
    }
)
"""Variables the job fills in per machine (always validated values)."""
SECRET_VARIABLES: Final = frozenset({"token"})
"""Variables that may only appear inside ``files`` (written through stdin to a
0600 file), never in a command line."""


class HostKeyPolicy(StrEnum):
    TOFU = "tofu"  # trust on first use, then pinned
    STRICT = "strict"  # only the user's known_hosts
    INSECURE = "insecure"  # accept anything (reported as a warning)


class Distribution(StrEnum):
    SFTP = "sftp"  # one SFTP push per machine that lacks the package
    HTTP = "http"  # machines pull from the job's HTTP server (SFTP push as the fallback)


def _require(problem: str | None, what: str = "") -> None:
    """A validator's refusal: the checker's message, after what was checked."""
    if problem:
        raise ValueError(f"{what}{problem}")


def check_safe_path(value: str) -> str | None:
    """Our own remote paths: a small alphabet, no '..', no leading '-'."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_PATH_LENGTH:
        return f"is {len(value)} characters long; use at most {MAX_PATH_LENGTH}"
    if not SAFE_PATH_RE.fullmatch(value):
        return f"{value[:80]!r} may only use letters, digits, '.', '_', '-' and '/'"
    if value.startswith("-") or ".." in value.split("/"):
        return f"{value[:80]!r} must not start with '-' or contain '..'"
    return None


def check_safe_value(value: str) -> str | None:
    if len(value) > MAX_VALUE_LENGTH:
        return f"is {len(value)} characters long; use at most {MAX_VALUE_LENGTH}"
    if not SAFE_VALUE_RE.fullmatch(value):
        return (
            f"{value[:80]!r} may only use letters, digits and . _ : / = @ + , % - "
            "(no spaces, quotes or shell metacharacters)"
        )
    return None


def check_api_server(value: str) -> str | None:
    """``host:port`` or ``[v6]:port``; host is an IP or a DNS-1123 subdomain."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]]+):([0-9]{1,5})", value)
    if len(value) > MAX_VALUE_LENGTH or m is None:
        return f"{value[:80]!r} is not host:port (e.g. 172.31.0.1:6443 or [fd00::1]:6443)"
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        return f"port {port} is out of range"
    if m.group(1) is not None:
        problem = check_ip(host)
        return None if problem is None else f"{problem}"
    if check_ip(host) is None:
        return None
    problem = check_dns1123_subdomain(host)
    return None if problem is None else f"host {problem}"


def placeholders(text: str) -> list[str]:
    return PLACEHOLDER_RE.findall(text)


def _leaves(value: Any) -> list[str]:
    """String leaves of a JSON value (file templates)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [*_leaves(k), *_leaves(v)]]
    return []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Machine(_Model):
    name: str
    ip: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _require(check_node_name(v), "node name ")
        return v

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        _require(check_ip(v))
        return canonical_ip(v)


class Timeouts(_Model):
    """Seconds per step."""

    connect: float = Field(default=20, gt=0, le=600)
    """TCP connect + key exchange + authentication."""
    command: float = Field(default=60, gt=0, le=3600)
    """Short commands: uname, checksum, mkdir, writing files."""
    transfer: float = Field(default=600, gt=0, le=7200)
    install: float = Field(default=900, gt=0, le=7200)
    """Each reset and join command."""
    wait_ready: float = Field(default=600, gt=0, le=7200, alias="waitReady")
    """For the Node to register and turn Ready (with cluster access)."""


class Retry(_Model):
    """Transient errors only (refused, timed-out connect, reset, connection lost)."""

    attempts: int = Field(default=3, ge=1, le=20)
    backoff: float = Field(default=2, ge=0, le=600)
    """First wait; doubles each attempt (with jitter), capped at ``backoff_max``."""
    backoff_max: float = Field(default=60, ge=0, le=3600, alias="backoffMax")


class InstallTemplate(_Model):
    """Commands as argv lists with ``{variable}`` placeholders.

    ``files``: name -> JSON value whose string leaves may hold placeholders; each is
    rendered (JSON, which is also YAML) and written through the SSH channel's stdin
    to ``{work_dir}/<name>`` with mode 0600; ``{<name>}`` is that path in commands.
    Secret variables (``token``) may only appear in files.
    """

    reset: list[list[str]] = Field(default_factory=list, max_length=MAX_TEMPLATE_COMMANDS)
    join: list[list[str]] = Field(min_length=1, max_length=MAX_TEMPLATE_COMMANDS)
    files: dict[str, Any] = Field(default_factory=dict, max_length=10)
    variables: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("reset", "join")
    @classmethod
    def _commands(cls, v: list[list[str]]) -> list[list[str]]:
        for argv in v:
            if not argv or len(argv) > MAX_TEMPLATE_ARGS:
                raise ValueError(f"a command has 1..{MAX_TEMPLATE_ARGS} arguments")
            for arg in argv:
                if len(arg) > 1024 or "\0" in arg or "\n" in arg:
                    raise ValueError("an argument is too long or holds NUL/newline")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, content in v.items():
            if not VARIABLE_NAME_RE.fullmatch(name):
                raise ValueError(f"file name {name[:40]!r} must match {VARIABLE_NAME_RE.pattern}")
            if name in BUILTIN_VARIABLES or name in SECRET_VARIABLES:
                raise ValueError(f"file name {name!r} is a built-in variable")
            if len(json.dumps(content)) > 64 * 1024:
                raise ValueError(f"file {name!r} is larger than 64 KiB")
        return v

    @field_validator("variables")
    @classmethod
    def _variables(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not VARIABLE_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"variable name {name[:40]!r} must match {VARIABLE_NAME_RE.pattern}"
                )
            if name in BUILTIN_VARIABLES or name in SECRET_VARIABLES:
                raise ValueError(f"variable {name!r} is built in; choose another name")
            _require(check_safe_value(value), f"variable {name}: ")
        return v

    @model_validator(mode="after")
    def _references(self) -> Self:
        known = BUILTIN_VARIABLES | set(self.variables) | set(self.files)
        for argv in [*self.reset, *self.join]:
            for arg in argv:
                for var in placeholders(arg):
                    if var in SECRET_VARIABLES:
                        raise ValueError(
                            f"{{{var}}} is a secret: it may only appear in files "
                            "(written through stdin), never in a command line"
                        )
                    if var not in known:
                        raise ValueError(f"unknown variable {{{var}}} in a command")
        for name, content in self.files.items():
            for leaf in _leaves(content):
                for var in placeholders(leaf):
                    if var in self.files:
                        raise ValueError(f"file {name!r} refers to file {{{var}}}")
                    if var not in known | SECRET_VARIABLES:
                        raise ValueError(f"unknown variable {{{var}}} in file {name!r}")
        return self


def edgeadm_template() -> InstallTemplate:
    """The default: SuperEdge's edgeadm command line (see ``penetrator.api.templates``)."""
    from penetrator.api.templates import DEFAULT_JOIN_TEMPLATE, named_template  # builds on us

    return named_template(DEFAULT_JOIN_TEMPLATE)


class JobDefaults(_Model):
    """What every job config of the operator starts from: the operator's settings
    (``job:``) set these, validated once at start-up; the task's facts come on top
    (``JobConfig``)."""

    ssh_user: str = Field(default="root", alias="sshUser")
    kubernetes_version: str = Field(default="v1.37.2", alias="kubernetesVersion")
    packages: dict[str, str] = Field(default_factory=dict)
    """arch (amd64, arm64) -> path of the install tarball on the job's filesystem."""
    template: InstallTemplate = Field(default_factory=edgeadm_template)
    work_dir: str = Field(default="/var/lib/penetrator", alias="workDir")
    """Remote directory for the package and files (relative: to the login directory)."""
    host_key_policy: HostKeyPolicy = Field(default=HostKeyPolicy.TOFU, alias="hostKeyPolicy")
    distribution: Distribution = Distribution.HTTP
    """http (default, measured faster: bench/job_bench.py): machines pull the package
    from the job over the LAN, SFTP push when a machine has no curl/wget or cannot
    reach the job; sftp: push to every machine that lacks it."""
    http_port: int = Field(default=0, ge=0, le=65535, alias="httpPort")
    """distribution http: the package server's port on the proxy node (0: any free one)."""
    concurrency: int = Field(default=1000, ge=1, le=5000)
    """Machines in progress at once (1,000 machines finish in about one install)."""
    transfer_concurrency: int = Field(default=50, ge=1, le=5000, alias="transferConcurrency")
    """Package pushes at once (bounds the job's memory and the proxy's uplink)."""
    keepalive: float = Field(default=15, ge=0, le=600)
    """Seconds between SSH keepalives (0: none); 3 unanswered ones end the connection."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: Retry = Field(default_factory=Retry)

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", v):
            raise ValueError(f"{v[:40]!r} is not a user name")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v is None:  # the settings' (JobSettings): the cluster's version
            return v
        if len(v) > 64 or not VERSION_RE.fullmatch(v):
            raise ValueError(f"{v[:40]!r} is not a version like v1.37.2")
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: dict[str, str]) -> dict[str, str]:
        for arch, path in v.items():
            if arch not in ARCHES:
                raise ValueError(f"architecture {arch[:20]!r} is not one of {', '.join(ARCHES)}")
            if not path or len(path) > 4096:
                raise ValueError(f"package path for {arch} is empty or too long")
        return v

    @field_validator("work_dir")
    @classmethod
    def _work_dir(cls, v: str) -> str:
        _require(check_safe_path(v))
        return v.rstrip("/") or "/"

    def has_packages(self) -> bool:
        return bool(self.packages)

    @model_validator(mode="after")
    def _packages_for_template(self) -> Self:
        if "{package_dir}" in json.dumps(self.template.model_dump()) and not self.has_packages():
            raise ValueError("the template uses {package_dir} but no packages are given")
        return self


class JobConfig(JobDefaults):
    """Everything `penetrator job` needs except the secrets (see module doc)."""

    machines: list[Machine] = Field(min_length=1, max_length=MAX_MACHINES)
    """Planned machines, name -> IP (the task's nodeNamesOverride)."""
    ssh_port: int = Field(default=DEFAULT_SSH_PORT, ge=1, le=65535, alias="sshPort")
    task_label: str = Field(alias="taskLabel")
    """Value of app.superedge.io/node-label for this task."""
    api_server: str = Field(alias="apiServer")
    """host:port the machines join (kubeadm's apiServerEndpoint)."""
    ca_cert_hash: str = Field(alias="caCertHash")
    namespace: str = NAMESPACE
    """Where the task's results ConfigMap lives (the operator's namespace)."""
    host_key_store: str | None = Field(default=None, alias="hostKeyStore")
    """The ConfigMap in ``namespace`` with the proxy node's host-key pins
    (``penetrator.api.hostkeys``); None: pins stay in the Job's run (and
    ``--known-hosts-out``)."""

    @field_validator("host_key_store")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        if v is not None:
            _require(check_dns1123_subdomain(v), "hostKeyStore ")
        return v

    package_root: str | None = Field(default=None, alias="packageRoot")
    """A directory on the job's filesystem holding ``<arch>/<one tarball>`` for the
    version (a host path or package image, mounted): an architecture without one has
    no package; none at all is an error before any machine is touched."""
    package_urls: dict[str, UrlPackage] = Field(default_factory=dict, alias="packageUrls")
    """arch -> URL and SHA-256: fetched into ``downloadDir`` and checked before any
    machine is touched."""
    download_dir: str = Field(default="/tmp/packages", alias="downloadDir")
    """Where ``packageUrls`` are fetched to (the Job's emptyDir)."""

    @field_validator("package_urls")
    @classmethod
    def _package_urls(cls, v: dict[str, UrlPackage]) -> dict[str, UrlPackage]:
        for arch in v:
            if arch not in ARCHES:
                raise ValueError(f"architecture {arch[:20]!r} is not one of {', '.join(ARCHES)}")
        return v

    def has_packages(self) -> bool:
        return bool(self.packages or self.package_root or self.package_urls)

    @field_validator("task_label")
    @classmethod
    def _label(cls, v: str) -> str:
        _require(check_label_value(v) or (None if v else "must not be empty"))
        return v

    @field_validator("api_server")
    @classmethod
    def _api(cls, v: str) -> str:
        _require(check_api_server(v))
        return v

    @field_validator("ca_cert_hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not CA_HASH_RE.fullmatch(v):
            raise ValueError("must be sha256:<64 lowercase hex digits>")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        _require(check_dns1123_label(v), "namespace ")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names: set[str] = set()
        ips: set[str] = set()
        for m in self.machines:
            if m.name in names:
                raise ValueError(f"node name {m.name!r} is planned twice")
            if m.ip in ips:
                raise ValueError(f"IP {m.ip} is planned twice")
            names.add(m.name)
            ips.add(m.ip)
        return self

    @classmethod
    def from_plan(cls, plan: dict[str, str], **kw: Any) -> JobConfig:
        """From a name -> IP map (the task's nodeNamesOverride)."""
        return cls.model_validate(
            {"machines": [{"name": n, "ip": ip} for n, ip in plan.items()], **kw}
        )
