"""Wiring of ``penetrator job``: files in, results out, an exit code.

exit 0   every planned machine joined (or already was)
exit 1   at least one machine failed
exit 2   the job could not start (config, credentials, packages, cluster access);
         its reason, one line without secrets, also goes to the termination log
         (the pod's ``terminationMessagePath``), where the operator reads it
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import ValidationError

from penetrator.api.hostkeys import effective_policy
from penetrator.api.jobconfig import JobConfig
from penetrator.api.results import ResultsDoc
from penetrator.job.cluster import Cluster
from penetrator.job.credentials import CredentialError, Credentials, load_credentials
from penetrator.job.hostkeys import HostKeyStore, write_pins
from penetrator.job.package import PackageProblem, load_packages
from penetrator.job.pinstore import PinStore, PinStoreError
from penetrator.job.report import Reporter, run_results, summary
from penetrator.job.report_api import ResultsWriter
from penetrator.job.runner import JobContext, all_joined, run_job

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START = 0, 1, 2
TERMINATION_LOG = Path("/dev/termination-log")
MAX_TERMINATION_MESSAGE = 1024  # bytes; the kubelet keeps up to 4096


class JobSetupError(Exception):
    """The job cannot start; the message is for the user (no secrets). ``reason``, one
    CamelCase word, heads the termination message (``<Reason>: <message>``), which
    the operator puts on the task's condition and Event."""

    def __init__(self, message: str, reason: str = "JobCannotStart") -> None:
        super().__init__(message)
        self.reason = reason


def load_config(path: Path) -> JobConfig:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except OSError as e:
        raise JobSetupError(
            f"cannot read the config {path}: {e.strerror}", "JobConfigInvalid"
        ) from None
    except yaml.YAMLError as e:
        raise JobSetupError(
            f"the config {path} is not YAML/JSON: {e}", "JobConfigInvalid"
        ) from None
    try:
        return JobConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}"
            for err in e.errors()[:10]
        )
        raise JobSetupError(f"invalid job config {path}: {problems}", "JobConfigInvalid") from None


@dataclass
class JobFiles:
    config: Path
    credentials: Path
    results: Path | None = None
    known_hosts_out: Path | None = None
    kubeconfig: Path | None = None
    use_cluster: bool = True  # False: never talk to the API, even in a pod
    report_configmap: str | None = None  # also write results into this ConfigMap
    termination_log: Path | None = None  # a setup error's reason goes here (if it exists)


def write_termination_message(path: Path, message: str) -> bool:
    """Write ``message`` as one line into ``path`` if that file exists (the kubelet
    provides it in a pod; outside one, e.g. a host process as root, nothing is created
    in /dev). The caller's message holds no secret (``JobSetupError``). True if written."""
    cut = " ".join(message.split()).encode()[:MAX_TERMINATION_MESSAGE]
    line = cut.decode(errors="ignore").encode() + b"\n"  # no half a character at the cut
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(line)
    return True


def raise_nofile() -> None:
    """One socket per machine: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 1 << 20)), hard))


async def host_keys(
    cfg: JobConfig, creds: Credentials, files: JobFiles, cluster: Cluster | None
) -> tuple[HostKeyStore, PinStore | None]:
    """The host-key check of this run: the policy (strict when the user gave a
    known_hosts), the user's keys, and the pins of the proxy node's store (in a
    cluster) or of ``--known-hosts-out``. Unparsable pins stop the Job, naming where."""
    policy = effective_policy(cfg.host_key_policy, creds.known_hosts is not None)
    pins_file: str | None = None
    if files.known_hosts_out is not None and files.known_hosts_out.is_file():
        pins_file = files.known_hosts_out.read_text()
    pin_store: PinStore | None = None
    stored: dict[str, str] = {}
    if cluster is not None and cfg.host_key_store is not None:
        pin_store = PinStore(cluster, cfg.host_key_store, cfg.namespace, cfg.timeouts.command)
        try:
            stored = await pin_store.load()
        except PinStoreError as e:
            raise JobSetupError(str(e)) from None
    try:
        store = HostKeyStore(policy, creds.known_hosts, pins_file, {**creds.pins, **stored})
    except (ValueError, TypeError) as e:
        raise JobSetupError(f"cannot parse known_hosts or pins: {type(e).__name__}") from None
    return store, pin_store


async def run_from_files(
    files: JobFiles,
    out: IO[str] | None = None,
    live: Callable[[str], None] | None = None,
) -> int:
    cfg = load_config(files.config)
    try:
        creds = load_credentials(files.credentials)
    except CredentialError as e:
        raise JobSetupError(str(e), "CredentialUnreadable") from None
    try:
        packages = await load_packages(cfg)
    except PackageProblem as e:
        raise JobSetupError(str(e), e.reason) from None
    except OSError as e:
        raise JobSetupError(str(e), "PackageNotFound") from None
    cluster: Cluster | None = None
    if files.use_cluster and (files.kubeconfig is not None or Cluster.in_cluster()):
        try:
            cluster = Cluster.from_kubeconfig(files.kubeconfig)
        except Exception as e:
            raise JobSetupError(
                f"cannot load cluster access: {type(e).__name__}: {e}", "ClusterUnreachable"
            ) from None
    try:
        store, pin_store = await host_keys(cfg, creds, files, cluster)
    except JobSetupError:
        if cluster is not None:
            await cluster.close()
        raise
    raise_nofile()
    writer: ResultsWriter | None = None
    ledger = ResultsDoc()
    if files.report_configmap:
        try:
            writer = ResultsWriter.from_environment(
                files.report_configmap, files.kubeconfig, namespace=cfg.namespace
            )
        except Exception as e:
            raise JobSetupError(
                f"cannot load cluster access: {type(e).__name__}", "ClusterUnreachable"
            ) from None
        try:
            ledger = await writer.start()
        except Exception as e:  # an API error is handled inside: this is the connection
            with contextlib.suppress(Exception):
                await writer.close(done=False)
            raise JobSetupError(
                f"cannot reach the API server: {type(e).__name__}", "ClusterUnreachable"
            ) from None
    results = run_results(ledger, cfg.machines)
    reporter = Reporter(
        results, out=out, results_path=files.results, live=live, sink=writer, ledger=ledger
    )
    ctx = JobContext(cfg, creds, store, packages, cluster, reporter, pins=pin_store)
    stop_on_sigterm(ctx.stopping)
    try:
        await run_job(ctx, results)
    finally:
        reporter.close()
        if writer is not None:
            await writer.close(done=all(r.phase.finished for r in results))
        if files.known_hosts_out is not None:
            write_pins(files.known_hosts_out, store.pins_text())
        if cluster is not None:
            await cluster.close()
    if out is not None:
        out.write(json.dumps({"summary": summary(results)}) + "\n")
        out.flush()
    return EXIT_OK if all_joined(results) else EXIT_FAILED


def stop_on_sigterm(stopping: asyncio.Event) -> None:
    """SIGTERM (the pod is deleted) sets ``stopping`` instead of ending the process:
    the machines under way finish within the pod's grace period (SIGKILL after it).
    Only where the loop may take signals (its main thread)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(RuntimeError, NotImplementedError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stopping.set)


def run(
    files: JobFiles, out: IO[str] | None = None, live: Callable[[str], None] | None = None
) -> int:
    """``run_from_files``; a ``JobSetupError`` is also written to the termination log."""
    try:
        return asyncio.run(run_from_files(files, out, live))
    except JobSetupError as e:
        if files.termination_log is not None:
            write_termination_message(files.termination_log, f"{e.reason}: {e}")
        raise
