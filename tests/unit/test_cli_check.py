"""`penetrator check`: how the API server's answer to the probe task reads (pure), and
the command's waiting and exit codes (the API call replaced by a scripted answer)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from httpx2 import Response
from lightkube.core.exceptions import ApiError

from penetrator.cli import user_cmd
from penetrator.cli.main import cli
from penetrator.k8s import userapi
from penetrator.k8s.userapi import PROBE_TASK, UserApiError, problem_of


def api_error(code: int, message: str) -> ApiError:
    status = {"kind": "Status", "code": code, "message": message}
    return ApiError(response=Response(code, json=status))


UNCALLABLE = (
    'Internal error occurred: failed calling webhook "mutate.nodetask.apps.superedge.io": '
    'failed to call webhook: Post "https://penetrator-webhook.edge-system.svc:443/mutate-'
    'create?timeout=10s": no endpoints available for service "penetrator-webhook"'
)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (500, UNCALLABLE),
        (404, "the server could not find the requested resource"),
        (503, "the server is currently unable to handle the request"),
    ],
)
def test_not_yet_when_the_chain_cannot_answer(code: int, message: str) -> None:
    assert problem_of(api_error(code, message)) == message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (400, 'admission webhook "validate.nodetask" denied the request: spec.sshCredential: ...'),
        (403, "ValidatingAdmissionPolicy 'penetrator' with binding 'b' denied request: ..."),
        (422, 'NodeTask.nodetask.apps.superedge.io "x" is invalid: spec: ...'),
    ],
)
def test_serving_when_a_check_refuses_the_probe(code: int, message: str) -> None:
    assert problem_of(api_error(code, message)) is None


def test_a_user_who_may_not_create_tasks_is_told_at_once() -> None:
    forbidden = 'nodetasks.nodetask.apps.superedge.io is forbidden: User "u" cannot create'
    with pytest.raises(UserApiError, match=r"cannot dry-run a NodeTask: .*forbidden"):
        problem_of(api_error(403, forbidden))


def test_the_probe_is_never_a_real_machine() -> None:
    assert PROBE_TASK["spec"]["targetMachines"] == ["192.0.2.1"]  # TEST-NET-1
    assert "name" not in PROBE_TASK["metadata"]


def scripted(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> list[float]:
    """admission_problem answers in turn; time advances by each sleep."""
    clock = [0.0]
    sleeps: list[float] = []

    def answer(_client: object) -> str | None:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a  # type: ignore[no-any-return]

    def sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    monkeypatch.setattr(user_cmd, "_client", lambda *_: object())
    monkeypatch.setattr(userapi, "admission_problem", answer)
    monkeypatch.setattr(userapi.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(userapi.time, "sleep", sleep)
    return sleeps


def test_check_waits_until_served(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = scripted(monkeypatch, ["no endpoints", "no endpoints", None])
    r = CliRunner().invoke(cli, ["check", "--wait", "60"])
    assert r.exit_code == 0, r.output
    assert "admits NodeTasks" in r.stdout
    assert sleeps == [2.0, 2.0]


def test_check_gives_up_at_the_deadline_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = scripted(monkeypatch, ["no endpoints"] * 10)
    r = CliRunner().invoke(cli, ["check", "--wait", "5"])
    assert r.exit_code == 1
    assert "does not serve yet: no endpoints" in r.stderr
    assert sleeps == [2.0, 2.0, 1.0]


def test_check_without_wait_asks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = scripted(monkeypatch, ["no endpoints"])
    assert CliRunner().invoke(cli, ["check"]).exit_code == 1
    assert sleeps == []


def test_check_stops_at_a_problem_waiting_cannot_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = scripted(monkeypatch, [UserApiError("cannot dry-run a NodeTask: forbidden")])
    r = CliRunner().invoke(cli, ["check", "--wait", "60"])
    assert r.exit_code == 1
    assert "forbidden" in r.stderr
    assert sleeps == []
