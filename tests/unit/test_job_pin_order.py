"""A machine's host key is stored in the proxy node's store before anything else is
done on it, and so before the join token is sent (``runner.step_pin``): the order of
what reaches the machine is recorded by a stand-in SSH session (the SSH side only;
the store is a stand-in with the ``PinStore`` interface, tested against the real API
server in tests/e2e/test_job_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from penetrator.api import MachinePhase
from penetrator.api.hostkeys import PinRefused
from penetrator.api.jobconfig import HostKeyPolicy, JobConfig
from penetrator.api.results import MachineResult
from penetrator.job import runner
from penetrator.job.credentials import Credentials
from penetrator.job.hostkeys import HostKeyStore, Verdict
from penetrator.job.pinstore import PinStoreError
from penetrator.job.runner import PROBE_MARK, JobContext, install_machine

TOKEN = "abcdef.0123456789abcdef"
FP = "SHA256:" + "Q" * 43


class Machine:
    """What reached the machine, in order (``pin``: the store's write returned)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def token_seen_at(self) -> int | None:
        return next((i for i, s in enumerate(self.seen) if TOKEN in s), None)


class FakeSession:
    def __init__(self, machine: Machine, verdict: Verdict) -> None:
        self.machine, self.verdict = machine, verdict

    async def run(self, step: str, command: str, limit: float, *, input: str | None = None) -> str:
        self.machine.seen.append(f"{step}: {command} <<< {input or ''}")
        if step == "prepare":
            return f"{PROBE_MARK}\nx86_64\n/home/u/work\n\n"
        return ""

    def local_address(self) -> str:
        return "10.0.0.254"

    def close(self) -> None:
        pass


class Store:
    """The ``PinStore`` interface: ``add`` returns once the pin is durable."""

    def __init__(self, machine: Machine, fail: Exception | None = None) -> None:
        self.machine, self.fail = machine, fail
        self.pins: dict[str, str] = {}

    async def add(self, host: str, fingerprint: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.pins[host] = fingerprint
        self.machine.seen.append(f"pin: {host} {fingerprint}")


def config() -> JobConfig:
    return JobConfig.model_validate(
        {
            "machines": [{"name": "edge-1", "ip": "10.0.0.1"}],
            "taskLabel": "t-abc",
            "apiServer": "10.0.0.9:6443",
            "caCertHash": "sha256:" + "0" * 64,
            "retry": {"attempts": 1},
            "template": {
                "join": [["join", "--config", "{join_yaml}"]],
                "files": {"join_yaml": {"token": "{token}"}},
            },
        }
    )


async def run_one(
    monkeypatch: pytest.MonkeyPatch,
    store: Store | None,
    machine: Machine,
    verdict: Verdict,
    policy: HostKeyPolicy = HostKeyPolicy.TOFU,
) -> MachineResult:
    async def connect(*_: Any) -> FakeSession:
        machine.seen.append("connect")
        return FakeSession(machine, verdict)

    monkeypatch.setattr(runner, "connect", connect)
    cfg = config()
    creds = Credentials("pw", None, TOKEN, None)
    ctx = JobContext(cfg, creds, HostKeyStore(policy), {}, pins=store)  # type: ignore[arg-type]
    return await install_machine(ctx, cfg.machines[0], MachineResult(name="edge-1", ip="10.0.0.1"))


async def test_the_pin_is_stored_before_the_token_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine()
    store = Store(m)
    r = await run_one(monkeypatch, store, m, Verdict(FP, pinned_now=True, insecure=False))
    assert r.phase is MachinePhase.JOINED, r.error
    assert store.pins == {"10.0.0.1": FP}
    assert m.seen[:2] == ["connect", f"pin: 10.0.0.1 {FP}"]
    token_at = m.token_seen_at()
    assert token_at is not None
    assert token_at > 1


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (PinRefused("host key of 10.0.0.1 is pinned to X by an earlier task"), "earlier task"),
        (PinStoreError("Kubernetes API: patch refused: 403"), "host key not stored, so no join"),
    ],
)
async def test_no_token_without_a_stored_pin(
    monkeypatch: pytest.MonkeyPatch, fail: Exception, error: str
) -> None:
    m = Machine()
    r = await run_one(monkeypatch, Store(m, fail), m, Verdict(FP, pinned_now=True, insecure=False))
    assert r.phase is MachinePhase.FAILED
    assert error in (r.error or "")
    assert m.seen == ["connect"]  # nothing else reached the machine
    assert m.token_seen_at() is None


@pytest.mark.parametrize(
    ("verdict", "policy"),
    [
        (Verdict(FP, pinned_now=False, insecure=True), HostKeyPolicy.INSECURE),
        (Verdict(FP, pinned_now=False, insecure=False), HostKeyPolicy.STRICT),
    ],
)
async def test_nothing_is_pinned_unchecked_or_under_strict(
    monkeypatch: pytest.MonkeyPatch, verdict: Verdict, policy: HostKeyPolicy
) -> None:
    m = Machine()
    store = Store(m)
    r = await run_one(monkeypatch, store, m, verdict, policy)
    assert r.phase is MachinePhase.JOINED, r.error
    assert store.pins == {}
