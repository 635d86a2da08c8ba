"""The Job's pod deleted (SIGTERM): no machine is started any more and the ones
under way finish, so the next round never installs a machine a second time. The
machine's attempt is a stand-in (``runner.attempt`` patched): what is tested is
``run_job``'s scheduling, with no SSH."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from penetrator.api import MachinePhase
from penetrator.api.jobconfig import HostKeyPolicy, JobConfig, Machine
from penetrator.api.results import MachineResult
from penetrator.job import runner
from penetrator.job.credentials import Credentials
from penetrator.job.entry import stop_on_sigterm
from penetrator.job.hostkeys import HostKeyStore

HASH = "sha256:" + "0" * 64


def context(machines: int, concurrency: int) -> runner.JobContext:
    cfg = JobConfig.model_validate(
        {
            "machines": [{"name": f"edge-{i}", "ip": f"10.10.1.{i + 1}"} for i in range(machines)],
            "taskLabel": "nodes-abc123",
            "apiServer": "172.31.0.1:6443",
            "caCertHash": HASH,
            "packages": {"amd64": "/pkg/amd64.tgz"},
            "concurrency": concurrency,
        }
    )
    creds = Credentials(password="x", key=None, token="t", known_hosts=None)
    return runner.JobContext(cfg, creds, HostKeyStore(HostKeyPolicy.TOFU, None), {})


def test_a_stopped_job_finishes_the_machines_under_way_and_starts_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[str] = []

    async def scenario() -> list[MachineResult]:
        ctx = context(machines=5, concurrency=2)
        release = asyncio.Event()
        two_running = asyncio.Event()

        async def attempt(_: runner.JobContext, m: Machine, r: MachineResult) -> None:
            started.append(m.name)
            if len(started) == 2:
                two_running.set()
            await release.wait()  # under way when the stop comes

        monkeypatch.setattr(runner, "attempt", attempt)
        job = asyncio.create_task(runner.run_job(ctx))
        await asyncio.wait_for(two_running.wait(), 10)
        stop_on_sigterm(ctx.stopping)
        os.kill(os.getpid(), signal.SIGTERM)  # as the kubelet does on pod deletion
        await asyncio.wait_for(ctx.stopping.wait(), 10)
        release.set()
        return await asyncio.wait_for(job, 10)

    try:
        results = asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert started == ["edge-0", "edge-1"]
    phases = [r.phase for r in results]
    assert phases[:2] == [MachinePhase.JOINED] * 2
    assert phases[2:] == [MachinePhase.PENDING] * 3
    assert {r.error for r in results[2:]} == {runner.NOT_STARTED}
