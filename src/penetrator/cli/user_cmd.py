"""The user's commands: ``add``, ``reinstall``, ``status``, ``watch``, ``credential``,
``check``.

As kubectl does: ``--kubeconfig``, ``--context``, ``-o yaml|json``; exit code 0 on
success, 1 when the task failed or the API refused (one line on stderr, the
apiserver's or the webhook's message), 2 for bad arguments, 130 when interrupted.
Also installed as the kubectl plugin ``kubectl-penetrator`` (``kubectl penetrator add ...``).
"""

from __future__ import annotations

import json
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from penetrator.api import (
    API_VERSION,
    KIND,
    NAMESPACE,
    NodeTaskSpec,
    user_spec_problems,
    validation_messages,
)
from penetrator.api.templates import JoinTemplate
from penetrator.cli.progress import (
    Progress,
    event_line,
    failure_line,
    phase_counts,
    plain_line,
    progress_of,
    render,
)
from penetrator.k8s.userapi import (
    UserApiError,
    await_admission,
    connect,
    create_credential,
    create_task,
    get_task,
    task_events,
)
from penetrator.plan.admission import in_spec

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_PREFIX = "edge"
"""`penetrator add` without --prefix: the name the seed's examples use."""
POLL_SECONDS = 1.0
PLAIN_HEARTBEAT = 30.0


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--context", help="The kubeconfig context to use (as kubectl --context).")(fn)
    fn = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config).",
    )(fn)
    return fn


_output = click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    help="Print the NodeTask as YAML or JSON.",
)


def _client(kubeconfig: str | None, context: str | None) -> Any:
    try:
        return connect(kubeconfig, context)
    except UserApiError as e:
        _fail(str(e))


def _print_object(obj: dict[str, Any], output: str | None) -> None:
    obj = {k: v for k, v in obj.items() if v is not None}
    if output == "json":
        click.echo(json.dumps(obj, indent=2))
    else:
        click.echo(yaml.safe_dump(obj, sort_keys=False).rstrip())


# --- add / reinstall -------------------------------------------------------------


def _read_lines(path: str) -> list[str]:
    """Whitespace- or comma-separated words of a file ('-': stdin); # starts a comment."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        _fail(f"--from-file {path}: {e.strerror}", EXIT_USAGE)
    words: list[str] = []
    for line in text.splitlines():
        words += re.split(r"[\s,]+", line.split("#", 1)[0].strip())
    return [w for w in words if w]


def _spec_or_exit(spec: dict[str, Any]) -> None:
    try:
        parsed = NodeTaskSpec.model_validate(spec)
    except ValidationError as e:
        _fail("; ".join(in_spec(validation_messages(e))), EXIT_USAGE)
    if problems := user_spec_problems(parsed):
        _fail("; ".join(problems), EXIT_USAGE)


def _task_body(name: str | None, stem: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} if name else {"generateName": f"{stem}-"}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def _create_and_follow(
    body: dict[str, Any],
    *,
    kubeconfig: str | None,
    context: str | None,
    dry_run: str | None,
    wait: bool,
    output: str | None,
    timeout: float,
) -> None:
    _spec_or_exit(body["spec"])
    if dry_run == "client":
        _print_object(body, output)
        return
    client = _client(kubeconfig, context)
    try:
        created = create_task(client, body, dry_run=dry_run == "server")
    except UserApiError as e:
        _fail(str(e))
    name = created["metadata"].get("name") or body["metadata"].get("generateName", "")
    if dry_run == "server" or output:
        _print_object(created, output)
        if dry_run == "server":
            return
    else:
        planned = len((created.get("spec") or {}).get("nodeNamesOverride") or {})
        click.echo(
            f"nodetask/{name} created ({planned} machine{'' if planned == 1 else 's'} planned)"
        )
    if wait:
        sys.exit(_follow(client, name, timeout=timeout))


_add_options: list[Callable[[Any], Any]] = [
    click.option("--proxy-node", help="Node that reaches the machines by SSH (omit: direct)."),
    click.option(
        "--credential",
        required=True,
        help=f"Secret in {NAMESPACE} with key passwd or sshkey (penetrator credential create).",
    ),
    click.option("--name", help="NodeTask name (default: generated from the prefix)."),
    click.option("--ssh-port", type=click.IntRange(1, 65535), default=None, help="SSH port."),
    click.option(
        "--join-template",
        type=click.Choice([t.value for t in JoinTemplate]),
        default=None,
        help="Join with this ready-made template (spec.joinTemplate; default: the operator's).",
    ),
    click.option(
        "--dry-run",
        type=click.Choice(["client", "server"]),
        is_flag=False,
        flag_value="client",
        help="Only print the NodeTask (client), or what the server would store (server).",
    ),
    click.option("--no-wait", is_flag=True, help="Create the task and return."),
    click.option(
        "--timeout", type=float, default=0, help="Give up following after this many seconds."
    ),
    _output,
]


def _apply(options: Iterable[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for option in reversed(list(options)):
            fn = option(fn)
        return fn

    return deco


@click.command()
@click.argument("ips", nargs=-1)
@click.option("--from-file", "from_file", help="File of IP addresses ('-': stdin).")
@click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="New nodes are named <prefix>-<6 random chars>.",
)
@_apply(_add_options)
@_connection_options
def add(
    ips: tuple[str, ...],
    from_file: str | None,
    prefix: str,
    proxy_node: str | None,
    credential: str,
    name: str | None,
    ssh_port: int | None,
    join_template: str | None,
    dry_run: str | None,
    no_wait: bool,
    timeout: float,
    output: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Add machines (IP...) as new nodes, then follow the task until it is done."""
    machines = list(ips) + (_read_lines(from_file) if from_file else [])
    if not machines:
        _fail("give the machines' IP addresses as arguments or with --from-file", EXIT_USAGE)
    spec: dict[str, Any] = {
        "nodeNamePrefix": prefix,
        "targetMachines": machines,
        "sshCredential": credential,
    }
    if proxy_node:
        spec["proxyNode"] = proxy_node
    if ssh_port:
        spec["sshPort"] = ssh_port
    if join_template:
        spec["joinTemplate"] = join_template
    _create_and_follow(
        _task_body(name, prefix, spec),
        kubeconfig=kubeconfig, context=context, dry_run=dry_run, wait=not no_wait,
        output=output, timeout=timeout,
    )  # fmt: skip


@click.command()
@click.argument("pairs", nargs=-1)
@click.option("--from-file", "from_file", help="File of NAME=IP pairs ('-': stdin).")
@_apply(_add_options)
@_connection_options
def reinstall(
    pairs: tuple[str, ...],
    from_file: str | None,
    proxy_node: str | None,
    credential: str,
    name: str | None,
    ssh_port: int | None,
    join_template: str | None,
    dry_run: str | None,
    no_wait: bool,
    timeout: float,
    output: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Reinstall (and possibly rename) machines as NAME=IP..., then follow the task."""
    words = list(pairs) + (_read_lines(from_file) if from_file else [])
    if not words:
        _fail("give NAME=IP pairs as arguments or with --from-file", EXIT_USAGE)
    override: dict[str, str] = {}
    for word in words:
        node, sep, ip = word.partition("=")
        if not sep or not node or not ip:
            _fail(f"{word!r}: write NAME=IP, e.g. edge-1mokvl=172.21.3.194", EXIT_USAGE)
        if node in override:
            _fail(f"{node}: given twice; one address per node name", EXIT_USAGE)
        override[node] = ip
    spec: dict[str, Any] = {"nodeNamesOverride": override, "sshCredential": credential}
    if proxy_node:
        spec["proxyNode"] = proxy_node
    if ssh_port:
        spec["sshPort"] = ssh_port
    if join_template:
        spec["joinTemplate"] = join_template
    _create_and_follow(
        _task_body(name, "reinstall", spec),
        kubeconfig=kubeconfig, context=context, dry_run=dry_run, wait=not no_wait,
        output=output, timeout=timeout,
    )  # fmt: skip


# --- check -----------------------------------------------------------------------


@click.command()
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=0,
    help="Keep trying for up to this many seconds (e.g. right after installing).",
)
@_connection_options
def check(wait_seconds: float, kubeconfig: str | None, context: str | None) -> None:
    """Check that penetrator serves: the API server admits NodeTasks through its
    webhook (a server-side dry run of a probe task; nothing is stored)."""
    client = _client(kubeconfig, context)
    try:
        problem = await_admission(client, wait_seconds)
    except UserApiError as e:
        _fail(str(e))
    if problem is not None:
        _fail(f"penetrator does not serve yet: {problem}")
    click.echo("penetrator serves: the API server admits NodeTasks through its webhook")


# --- status / watch --------------------------------------------------------------


def _exit_code(p: Progress) -> int:
    return EXIT_FAILED if p.phase == "failed" else 0


def _events(client: Any, name: str) -> list[str]:
    try:
        return [event_line(e) for e in task_events(client, name)]
    except UserApiError:
        return []  # events are a bonus: RBAC may not allow them


def _follow(client: Any, name: str, timeout: float = 0, poll: float = POLL_SECONDS) -> int:
    """Show the task live until ready or failed; the exit code."""
    console = Console()
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        if console.is_terminal:
            return _follow_live(console, client, name, deadline, poll)
        return _follow_plain(client, name, deadline, poll)
    except KeyboardInterrupt:
        click.echo(f"interrupted; the task goes on (penetrator watch {name})", err=True)
        return EXIT_INTERRUPTED


def _get(client: Any, name: str) -> Progress:
    try:
        return progress_of(get_task(client, name))
    except UserApiError as e:
        if e.not_found:
            _fail(f"NodeTask {name} not found (deleted?)")
        _fail(str(e))


def _timed_out(deadline: float | None, name: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        _fail(f"timed out following NodeTask {name}; it goes on (penetrator watch {name})")


def _follow_live(
    console: Console, client: Any, name: str, deadline: float | None, poll: float
) -> int:
    p = _get(client, name)
    events: list[str] = []
    last_events = 0.0
    with Live(render(p), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            if time.monotonic() - last_events > 5 or p.finished:
                events, last_events = _events(client, name), time.monotonic()
            live.update(render(p, events))
            if p.finished:
                break
            _timed_out(deadline, name)
            time.sleep(poll)
            p = _get(client, name)
    return _exit_code(p)


def _follow_plain(client: Any, name: str, deadline: float | None, poll: float) -> int:
    """A line when the state changes (and every ``PLAIN_HEARTBEAT`` seconds anyway);
    each failure's reason once."""
    last: tuple[Any, ...] = ()
    last_at = 0.0
    shown: set[tuple[str, int, str]] = set()
    while True:
        p = _get(client, name)
        state = (p.phase, p.planned, p.joined, p.failed, phase_counts(p))
        if state != last or time.monotonic() - last_at > PLAIN_HEARTBEAT:
            click.echo(plain_line(p))
            last, last_at = state, time.monotonic()
        for f in p.failures:
            key = (f.name, f.attempts, f.error)
            if f.error and key not in shown:
                shown.add(key)
                click.echo(failure_line(f))
        if p.finished:
            return _exit_code(p)
        _timed_out(deadline, name)
        time.sleep(poll)


@click.command()
@click.argument("task")
@_output
@_connection_options
def status(task: str, output: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Show where TASK stands now (exit 1 if it failed)."""
    client = _client(kubeconfig, context)
    try:
        body = get_task(client, task)
    except UserApiError as e:
        _fail(str(e))
    p = progress_of(body)
    if output:
        _print_object(body, output)
    else:
        console = Console()
        events = _events(client, task)
        if console.is_terminal:
            console.print(render(p, events))
        else:
            click.echo(plain_line(p))
            for f in p.failures:
                click.echo(failure_line(f))
            for line in events[-5:]:
                click.echo(f"  event {line}")
    sys.exit(_exit_code(p))


@click.command()
@click.argument("task")
@click.option("--timeout", type=float, default=0, help="Give up after this many seconds.")
@_connection_options
def watch(task: str, timeout: float, kubeconfig: str | None, context: str | None) -> None:
    """Follow TASK live until it is ready (exit 0) or failed (exit 1)."""
    client = _client(kubeconfig, context)
    sys.exit(_follow(client, task, timeout=timeout))


# --- credential ------------------------------------------------------------------


@click.group()
def credential() -> None:
    """The Secret holding the machines' root login (namespace edge-system)."""


@credential.command("create")
@click.argument("name")
@click.option("--password-file", type=click.Path(dir_okay=False), help="File with the password.")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Private key file (mode 0600).")
@_connection_options
def credential_create(
    name: str,
    password_file: str | None,
    key_file: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Create Secret edge-system/NAME with key passwd or sshkey."""
    if (password_file is None) == (key_file is None):
        _fail("give exactly one of --password-file and --key-file", EXIT_USAGE)
    path = Path(password_file or key_file or "")
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        _fail(f"{path}: {e.strerror}", EXIT_USAGE)
    if key_file is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        _fail(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); a private key must "
            f"be yours alone: chmod 600 {path}",
            EXIT_USAGE,
        )
    if password_file is not None:
        data = data.rstrip(b"\r\n")
    if not data.strip():
        _fail(f"{path} is empty", EXIT_USAGE)
    if key_file is not None and b"PRIVATE KEY" not in data:
        _fail(f"{path} does not look like a private key (no PRIVATE KEY block)", EXIT_USAGE)
    client = _client(kubeconfig, context)
    try:
        create_credential(
            client,
            name,
            password=data if password_file is not None else None,
            key=data if key_file is not None else None,
        )
    except UserApiError as e:
        _fail(str(e))
    click.echo(f"secret/{name} created in {NAMESPACE}")
