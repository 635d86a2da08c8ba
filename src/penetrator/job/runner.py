"""The job: every planned machine, concurrently (bounded), each over one SSH
connection: skip if already labelled -> connect (host key) -> pin stored -> arch ->
package -> files -> reset -> old Node removed -> join -> wait Ready. The job never
writes Nodes: a Node of the machine's name left by an earlier install is deleted by
the operator when the results ask for it (``step_old_node``), the operator approves
the machine's CSR and labels the Node once the results say it joined.

``run_job`` is what ``penetrator job`` calls; ``install_machine`` is one machine
with retries; ``attempt`` is one try. Tests call each directly.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from penetrator.api import MachinePhase, machine_text, truncate_error
from penetrator.api.hostkeys import PinRefused, host_pattern
from penetrator.api.jobconfig import (
    UNAME_TO_ARCH,
    Distribution,
    HostKeyPolicy,
    JobConfig,
    Machine,
    check_safe_path,
)
from penetrator.api.results import MAX_REPLACED, MachineResult, ResultsDoc
from penetrator.job.cluster import Cluster, ClusterError
from penetrator.job.credentials import Credentials
from penetrator.job.hostkeys import HostKeyError, HostKeyStore
from penetrator.job.package import Package, RemotePaths, ensure_package, parse_probe, probe_script
from penetrator.job.pinstore import PinStore, PinStoreError
from penetrator.job.pkgserver import PackageServer, source_addresses
from penetrator.job.report import Reporter, run_results
from penetrator.job.template import (
    RenderedInstall,
    join_path,
    render_install,
    write_file_command,
)
from penetrator.job.transport import (
    MachineError,
    Session,
    backoff_delay,
    connect,
    describe,
    is_transient,
)

T = TypeVar("T")
PROBE_MARK = "--penetrator-probe--"
JOINED_MARKER = "joined"
"""``{work_dir}/joined`` holds the task label after a join; without cluster
access it is how a later run knows the machine is done."""


@dataclass
class JobContext:
    cfg: JobConfig
    creds: Credentials
    store: HostKeyStore
    packages: dict[str, Package]
    cluster: Cluster | None = None
    reporter: Reporter | None = None
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    transfers: asyncio.Semaphore | None = None  # made by run_job from the config
    server: PackageServer | None = None  # distribution http: started by run_job
    pins: PinStore | None = None  # the proxy node's host-key store (in a cluster)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on SIGTERM (the pod is being deleted): no machine is started any more, the
    ones under way finish (the pod's grace period), so none is left half-joined for
    the next round to install a second time."""


NOT_STARTED = "not tried: the job was stopped (its pod deleted) before this machine"


class _Skip(Exception):
    """The machine is already done (a Node with this task's label)."""


@asynccontextmanager
async def _timed(r: MachineResult, step: str) -> AsyncIterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        r.add_time(step, time.monotonic() - t0)


@asynccontextmanager
async def _unbounded() -> AsyncIterator[None]:
    yield


def _phase(ctx: JobContext, r: MachineResult, phase: MachinePhase) -> None:
    r.phase = phase
    if ctx.reporter is not None:
        ctx.reporter.changed(r)


@dataclass(frozen=True)
class Prepared:
    uname: str
    work_dir: str  # absolute, as the machine resolves it
    joined_label: str  # contents of the joined marker ('' if none)
    packages: dict[str, tuple[bool, bool]]  # arch -> (archive there, extracted)


async def prepare(
    s: Session, work_dir: str, packages: dict[str, Package], limit: float
) -> Prepared:
    """One round trip: arch, the work dir (made), the joined marker and, for each
    configured package, whether the machine already has it."""
    wd = shlex.quote(work_dir)
    rel = {a: RemotePaths.of(".", p) for a, p in sorted(packages.items())}
    parts = [
        f"echo {PROBE_MARK}",  # whatever a login script prints comes before this
        "uname -m",
        "umask 077",
        f"mkdir -p -- {wd}/packages",
        f"cd -- {wd}",
        "pwd -P",
        f'printf "%s\\n" "$(cat -- {shlex.quote(JOINED_MARKER)} 2>/dev/null)"',
        *[probe_script(r) for r in rel.values()],
    ]
    text = await s.run("prepare", " && ".join(parts), limit)
    out = text.split("\n")
    marks = [i for i, line in enumerate(out) if line.strip() == PROBE_MARK]
    out = out[marks[-1] + 1 :] if marks else []
    if len(out) < 3 + 2 * len(rel):
        raise MachineError("prepare: unexpected output from uname/pwd/sha256sum")
    present = {
        arch: parse_probe(out[3 + 2 * i], out[4 + 2 * i], packages[arch])
        for i, arch in enumerate(rel)
    }
    return Prepared(out[0].strip(), out[1].strip(), out[2].strip(), present)


def pick_arch(uname: str) -> str:
    arch = UNAME_TO_ARCH.get(uname)
    if arch is None:
        shown = truncate_error(uname, 40)
        raise MachineError(
            f"unsupported architecture {shown!r} (uname -m); "
            "supported: x86_64 (amd64), aarch64 (arm64)"
        )
    return arch


async def attempt(ctx: JobContext, m: Machine, r: MachineResult) -> None:
    """One try at one machine; raises on failure, _Skip when already done.

    Timed steps, each its own function with its own time limit from
    ``cfg.timeouts``: probe (command), transfer (transfer), reset (install per
    command), join (install per command), ready (wait_ready)."""
    cfg, t = ctx.cfg, ctx.cfg.timeouts
    if ctx.cluster is not None:
        node = await ctx.cluster.get_node(m.name, t.command)
        if node is not None and node.labelled(cfg.task_label):
            raise _Skip
    _phase(ctx, r, MachinePhase.CONNECTING)
    async with _timed(r, "connect"):
        s = await connect(cfg, m, ctx.creds, ctx.store)
    try:
        await step_pin(ctx, s, m)
        prep, arch = await step_probe(ctx, s, r, t.command)
        pkg_dir = await step_transfer(ctx, s, r, prep, arch, t.transfer)
        _phase(ctx, r, MachinePhase.INSTALLING)
        abs_cfg = cfg.model_copy(update={"work_dir": prep.work_dir})
        rendered = render_install(
            abs_cfg, m, arch, pkg_dir, {"token": ctx.creds.token}, ctx.creds.redactor
        )
        marker = join_path(prep.work_dir, JOINED_MARKER)
        await step_reset(s, r, rendered, marker, t.install, t.command)
        if ctx.cluster is not None:
            await step_old_node(ctx, ctx.cluster, m, r)
        await step_join(ctx, s, m, r, rendered, t.install)
        if ctx.cluster is None:
            # no cluster to ask later: the marker tells the next run it is done
            record = f"echo {shlex.quote(cfg.task_label)} > {shlex.quote(marker)}"
            cleanup = _cleanup_command(rendered)
            await s.run("record", f"{cleanup} && {record}" if cleanup else record, t.command)
            return
        if cleanup := _cleanup_command(rendered):
            await s.run("cleanup", cleanup, t.command)
        s.close()  # nothing more to do on the machine: free its sshd while we wait
        await step_ready(ctx.cluster, m, r, t.wait_ready)
    finally:
        s.close()


async def step_pin(ctx: JobContext, s: Session, m: Machine) -> None:
    """Trust on first use: the key accepted for the machine is in the proxy node's
    store before anything else is done there, so before the join token is sent (and
    a later task expects the same key). A key that cannot be stored fails the
    machine: no token goes to a machine whose pin could be lost."""
    if ctx.pins is None or s.verdict.insecure or ctx.store.policy is not HostKeyPolicy.TOFU:
        return
    try:
        await ctx.pins.add(host_pattern(m.ip, ctx.cfg.ssh_port), s.verdict.fingerprint)
    except PinRefused as e:
        raise HostKeyError(f"{m.name} ({m.ip}): {e}") from None
    except PinStoreError as e:
        raise MachineError(f"host key not stored, so no join: {e}") from None


async def step_probe(
    ctx: JobContext, s: Session, r: MachineResult, limit: float
) -> tuple[Prepared, str]:
    """The host key seen, then one round trip: arch, work dir, joined marker, and
    the packages already there. ``_Skip`` when the marker says done (no cluster)."""
    if not s.verdict.insecure:
        r.host_key = s.verdict.fingerprint  # pinned (tofu) or known: the operator keeps it
    elif not r.warnings:
        r.warnings.append(f"host key {s.verdict.fingerprint} accepted without checking")
    async with _timed(r, "prepare"):
        prep = await prepare(s, ctx.cfg.work_dir, ctx.packages, limit)
    if ctx.cluster is None and prep.joined_label == ctx.cfg.task_label:
        raise _Skip
    problem = check_safe_path(prep.work_dir)
    if problem:
        raise MachineError(f"the work dir resolves to an unusable path: {problem}")
    arch = pick_arch(prep.uname)
    r.arch = arch
    return prep, arch


async def step_transfer(
    ctx: JobContext, s: Session, r: MachineResult, prep: Prepared, arch: str, limit: float
) -> str | None:
    """The package for ``arch`` onto the machine (unless there); its directory
    (None: no packages configured)."""
    if not ctx.cfg.has_packages():
        return None
    pkg = ctx.packages.get(arch)
    if pkg is None:
        raise MachineError(f"no package for {arch} in the job config")
    _phase(ctx, r, MachinePhase.TRANSFERRING)
    command = ctx.cfg.timeouts.command
    async with _timed(r, "transfer"), ctx.transfers or _unbounded():
        url = ctx.server.url(s.local_address(), pkg) if ctx.server else None
        got = await ensure_package(s, pkg, prep.work_dir, prep.packages[arch], limit, command, url)
    if got.method is not None:
        r.transferred, r.delivery = True, got.method
    if got.note and got.note not in r.warnings:
        r.warnings.append(machine_text(got.note))
    return got.directory


async def step_reset(
    s: Session,
    r: MachineResult,
    rendered: RenderedInstall,
    marker: str,
    limit: float,
    command: float,
) -> None:
    """Forget an earlier join (the marker, within ``command``), then the reset
    commands, each within ``limit``."""
    async with _timed(r, "install"):
        await s.run("install", f"rm -f -- {shlex.quote(marker)}", command)
        for line in rendered.reset:
            await s.run("reset", line, limit)


async def step_old_node(ctx: JobContext, cluster: Cluster, m: Machine, r: MachineResult) -> None:
    """A Node of the machine's own name without the task's label (a reinstall under the
    same name) is removed before the join: the real ``kubeadm join`` refuses a name whose
    Node is Ready, before any CSR. Only now, after the reset stopped the old kubelet (it
    would register the Node again), the results ask the operator to delete it
    (``awaits_removal``; it checks the name against the plan and the label), and the join
    waits until a list of Nodes lacks it, at most ``timeouts.command`` seconds."""
    limit = ctx.cfg.timeouts.command
    if not await cluster.stale_same_name(m.name, ctx.cfg.task_label, limit):
        return
    r.awaits_removal = m.name
    if ctx.reporter is not None:
        ctx.reporter.changed(r)
    try:
        async with _timed(r, "old_node"):
            await cluster.wait_gone(m.name, limit)
    except (TimeoutError, ClusterError) as e:
        raise MachineError(
            f"the old Node {m.name} was not removed in time, so no join ({e}); the operator "
            "removes it when the results ask: is it running, and does it hold its Lease?"
        ) from None
    finally:
        r.awaits_removal = None
    if ctx.reporter is not None:
        ctx.reporter.changed(r)


async def step_join(
    ctx: JobContext,
    s: Session,
    m: Machine,
    r: MachineResult,
    rendered: RenderedInstall,
    limit: float,
) -> None:
    """The join files (they may hold the token: written just before the join, removed
    after it, also when it fails), the Nodes of other names with this address
    reported (a rename leaves one), the join commands, each within ``limit``."""
    cfg, command = ctx.cfg, ctx.cfg.timeouts.command
    _phase(ctx, r, MachinePhase.JOINING)
    try:
        async with _timed(r, "join"):
            for f in rendered.files:
                await s.run("join", write_file_command(f.path), command, input=f.content)
            if ctx.cluster is not None:  # reported, for the operator to remove once joined
                old = await ctx.cluster.stale_by_address(m.name, m.ip, cfg.task_label, command)
                r.replaces = old[:MAX_REPLACED] or None
            for line in rendered.join:
                await s.run("join", line, limit)
    except Exception:
        if cleanup := _cleanup_command(rendered):
            try:
                await s.run("cleanup", cleanup, command)
            except Exception as e:  # best effort, reported as a warning
                r.warnings.append(describe(e, cfg.ssh_port, ctx.creds.redactor))
        raise


async def step_ready(cluster: Cluster, m: Machine, r: MachineResult, limit: float) -> None:
    """Wait for the Node to be Ready (within ``limit``); the operator labels it."""
    async with _timed(r, "wait_ready"):
        try:
            await cluster.wait_ready(m.name, limit)
        except (TimeoutError, ClusterError) as e:  # final, with what was seen
            raise MachineError(f"joined, but {e}") from None


def _cleanup_command(rendered: RenderedInstall) -> str:
    """Removes the join files ('' when there are none)."""
    if not rendered.files:
        return ""
    return "rm -f -- " + " ".join(shlex.quote(f.path) for f in rendered.files)


async def install_machine(ctx: JobContext, m: Machine, r: MachineResult) -> MachineResult:
    """One machine, with retries of transient errors (exponential backoff)."""
    t0 = time.monotonic()
    retry = ctx.cfg.retry
    try:
        while True:
            r.tries += 1
            try:
                await attempt(ctx, m, r)
                r.phase, r.error = MachinePhase.JOINED, None
                return r
            except _Skip:
                r.phase, r.error, r.skipped = MachinePhase.JOINED, None, True
                return r
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every error becomes this machine's result
                r.error = describe(e, ctx.cfg.ssh_port, ctx.creds.redactor)
                if not is_transient(e) or r.tries >= retry.attempts or ctx.stopping.is_set():
                    if is_transient(e) and r.tries > 1:
                        r.error = truncate_error(f"{r.error} (after {r.tries} attempts)")
                    r.phase = MachinePhase.FAILED
                    return r
                _phase(ctx, r, MachinePhase.PENDING)
                await ctx.sleep(backoff_delay(r.tries, retry.backoff, retry.backoff_max, ctx.rng))
    finally:
        r.add_time("total", time.monotonic() - t0)
        if ctx.reporter is not None:
            ctx.reporter.finished(r)


async def run_job(
    ctx: JobContext, results: list[MachineResult] | None = None
) -> list[MachineResult]:
    """Every machine of the config, at most ``concurrency`` at once. Results in plan order."""
    if results is None:
        results = run_results(ResultsDoc(), ctx.cfg.machines)
    if ctx.cfg.host_key_policy is HostKeyPolicy.INSECURE and ctx.reporter is not None:
        ctx.reporter.warn("host key policy insecure: host keys are not checked")
    sem = asyncio.Semaphore(ctx.cfg.concurrency)
    if ctx.transfers is None:
        ctx.transfers = asyncio.Semaphore(ctx.cfg.transfer_concurrency)

    async def one(m: Machine, r: MachineResult) -> MachineResult:
        async with sem:
            if ctx.stopping.is_set():
                r.error = NOT_STARTED  # still pending: the next round tries it
                return r
            return await install_machine(ctx, m, r)

    started_server = False
    if ctx.cfg.distribution is Distribution.HTTP and ctx.packages and ctx.server is None:
        hosts = source_addresses(m.ip for m in ctx.cfg.machines)
        cap = 2 * ctx.cfg.transfer_concurrency  # a pull and its retry per transfer slot
        ctx.server = PackageServer(ctx.packages, hosts, ctx.cfg.http_port, cap)
        await ctx.server.start()
        started_server = True
    try:
        pairs = zip(ctx.cfg.machines, results, strict=True)
        await asyncio.gather(*(one(m, r) for m, r in pairs))
    finally:
        if started_server and ctx.server is not None:
            await ctx.server.close()
    if ctx.reporter is not None:
        ctx.reporter.close()
    return results


def all_joined(results: list[MachineResult]) -> bool:
    return bool(results) and all(r.phase is MachinePhase.JOINED for r in results)
