"""Rendering the install template into remote command lines and files.

Commands: each argument of each argv list is substituted as a whole (one pass,
so a value is never rescanned) and the argv is ``shlex.join``-ed. Files: the JSON
value's string leaves are substituted and the result dumped as JSON (also YAML),
so no value can break out of its string either. Secrets (``token``) only ever go
into files; a rendered command that still contains a secret is refused.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from penetrator.api.jobconfig import (
    PLACEHOLDER_RE,
    SECRET_VARIABLES,
    JobConfig,
    Machine,
    check_safe_path,
)
from penetrator.api.templates import WRAPPER_SCRIPT
from penetrator.job.redact import Redactor


class TemplateError(ValueError):
    pass


def substitute(text: str, variables: dict[str, str]) -> str:
    def one(m: Any) -> str:
        name = m.group(1)
        if name not in variables:
            raise TemplateError(f"unknown variable {{{name}}}")
        return variables[name]

    return PLACEHOLDER_RE.sub(one, text)


def render_argv(argv: list[str], variables: dict[str, str]) -> list[str]:
    return [substitute(a, variables) for a in argv]


def render_command(argv: list[str], variables: dict[str, str]) -> str:
    """One shell command line: every argument quoted."""
    return shlex.join(render_argv(argv, variables))


def _render_json(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, variables)
    if isinstance(value, list):
        return [_render_json(v, variables) for v in value]
    if isinstance(value, dict):
        return {substitute(k, variables): _render_json(v, variables) for k, v in value.items()}
    return value


def render_file(content: Any, variables: dict[str, str]) -> str:
    if isinstance(content, str):  # a plain text file: substituted verbatim
        return substitute(content, variables)
    return json.dumps(_render_json(content, variables), indent=2) + "\n"


def package_dir(work_dir: str, sha256: str) -> str:
    return f"{work_dir}/pkg/{sha256[:16]}"


def join_path(work_dir: str, *parts: str) -> str:
    path = "/".join([work_dir.rstrip("/"), *parts]) if work_dir != "/" else "/" + "/".join(parts)
    problem = check_safe_path(path)
    if problem:
        raise TemplateError(f"remote path {problem}")
    return path


def machine_variables(
    cfg: JobConfig, machine: Machine, arch: str, pkg_dir: str | None
) -> dict[str, str]:
    """The built-in variables for one machine (all validated values)."""
    host, _, port = cfg.api_server.rpartition(":")
    v = dict(cfg.template.variables)
    v.update(
        node_name=machine.name,
        node_ip=machine.ip,
        arch=arch,
        api_server=cfg.api_server,
        api_server_host=host.strip("[]"),
        api_server_port=port,
        ca_cert_hash=cfg.ca_cert_hash,
        kubernetes_version=cfg.kubernetes_version,
        task_label=cfg.task_label,
        work_dir=cfg.work_dir,
        package_dir=pkg_dir or "",
    )
    for name in cfg.template.files:
        v[name] = join_path(cfg.work_dir, name)
    return v


@dataclass(frozen=True, repr=False)
class RenderedFile:
    path: str
    content: str  # may hold a secret: never log it

    def __repr__(self) -> str:
        return f"RenderedFile({self.path!r}, {len(self.content)} bytes)"


@dataclass(frozen=True)
class RenderedInstall:
    files: list[RenderedFile] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)


def render_install(
    cfg: JobConfig,
    machine: Machine,
    arch: str,
    pkg_dir: str | None,
    secrets: dict[str, str],
    redactor: Redactor | None = None,
) -> RenderedInstall:
    """Files (with secrets) and command lines (never with secrets) for one machine."""
    if set(secrets) - SECRET_VARIABLES:
        raise TemplateError("only the declared secret variables may be passed as secrets")
    public = machine_variables(cfg, machine, arch, pkg_dir)
    files = [
        RenderedFile(public[name], render_file(content, {**public, **secrets}))
        for name, content in cfg.template.files.items()
    ]
    reset = [render_command(a, public) for a in cfg.template.reset]
    join = [render_command(a, public) for a in cfg.template.join]
    for line in [*reset, *join]:
        if any(s and s in line for s in secrets.values()) or (redactor and line in redactor):
            raise TemplateError("a rendered command contains a secret; refusing to run it")
    return RenderedInstall(files, reset, join)


def command_words(line: str) -> list[str]:
    """How an error names a command line: the program's base name and its first
    argument; through the token wrapper (``sh -c SCRIPT TOOL FILE ARG...``), the
    wrapped tool's, so users read `edgeadm join`, not `sh -c`."""
    try:
        argv = shlex.split(line)
    except ValueError:
        argv = line.split()
    if argv[:3] == ["sh", "-c", WRAPPER_SCRIPT] and len(argv) > 4:
        argv = [argv[3], *argv[5:]]
    return [os.path.basename(argv[0]), *argv[1:2]] if argv else []


def write_file_command(path: str) -> str:
    """Shell command writing stdin to ``path`` with mode 0600 (atomically)."""
    tmp = path + ".tmp"
    return (
        f"umask 077 && mkdir -p -- {shlex.quote(path.rsplit('/', 1)[0] or '/')} && "
        f"cat > {shlex.quote(tmp)} && chmod 600 {shlex.quote(tmp)} && "
        f"mv -f -- {shlex.quote(tmp)} {shlex.quote(path)}"
    )
