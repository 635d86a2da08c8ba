"""Retry classification, backoff, messages, credentials and redaction, results."""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import asyncssh
import pytest

from penetrator.api import MachinePhase
from penetrator.api.results import MachineResult, ResultsDoc
from penetrator.job.credentials import CredentialError, load_credentials
from penetrator.job.hostkeys import HostKeyMismatch
from penetrator.job.redact import REDACTED, Redactor
from penetrator.job.report import Reporter, summary
from penetrator.job.transport import (
    MachineError,
    RemoteCommandFailed,
    StepTimeout,
    backoff_delay,
    describe,
    is_transient,
)

TOKEN = "abcdef.0123456789abcdef"


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (OSError(errno.EHOSTUNREACH, "no route"), True),
        (TimeoutError(), True),
        (StepTimeout("connect", 3), True),
        (asyncssh.ConnectionLost("gone"), True),
        (StepTimeout("join", 900), False),
        (StepTimeout("transfer", 9), False),
        (asyncssh.PermissionDenied("Permission denied"), False),
        (asyncssh.HostKeyNotVerifiable("no"), False),
        (HostKeyMismatch("m", "10.0.0.1", ["SHA256:a"], "SHA256:b"), False),
        (RemoteCommandFailed("join", "edgeadm join", 1, "boom"), False),
        (MachineError("unsupported architecture"), False),
        (asyncssh.ProtocolError("bad"), False),
        (ValueError("x"), False),
        (OSError(errno.EACCES, "denied"), False),
    ],
)
def test_only_transient_errors_are_retried(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 10):
        d = backoff_delay(attempt, 1, 8, rng)
        full = min(8, 2 ** (attempt - 1))
        assert full / 2 <= d <= full


def test_messages_are_clear_short_and_scrubbed() -> None:
    r = Redactor(["hunter22", TOKEN])
    assert describe(asyncssh.PermissionDenied("x"), 22, r) == (
        "authentication failed: the credential was refused"
    )
    assert describe(ConnectionRefusedError(errno.ECONNREFUSED, "x"), 2222, r) == (
        "connection refused on port 2222"
    )
    assert describe(StepTimeout("connect", 3), 22, r) == "connect timed out after 3s"
    text = describe(ValueError("oops hunter22 " + TOKEN + " " + "x" * 500), 22, r)
    assert "hunter22" not in text
    assert TOKEN not in text
    assert REDACTED in text
    assert len(text.encode()) <= 200
    failed = RemoteCommandFailed("join", "/w/pkg/x/edgeadm join --config /w/c", 3, "bad\nthing")
    assert str(failed) == "join failed: `edgeadm join` exited 3: bad thing"


def test_redactor_scrubs_key_lines_and_token_secret() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    r = Redactor([key, TOKEN, TOKEN.split(".")[1], "ab"])
    body = key.splitlines()[1]
    assert body not in r.scrub("x " + body + " y")
    assert r.scrub("secret 0123456789abcdef") == f"secret {REDACTED}"
    assert r.scrub("ab stays") == "ab stays"  # too short to scrub
    assert body in r
    assert "nothing" not in r


def _creds(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_credentials_password(tmp_path: Path) -> None:
    c = load_credentials(_creds(tmp_path, passwd="hunter22\n", token=TOKEN + "\n"))
    assert c.password == "hunter22"
    assert c.key is None
    assert c.token == TOKEN
    assert c.auth_method == "password"
    assert "hunter22" not in repr(c)
    assert TOKEN not in repr(c)
    assert "hunter22" in c.redactor
    assert TOKEN in c.redactor


def test_credentials_key_and_known_hosts(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    c = load_credentials(_creds(tmp_path, sshkey=key, token=TOKEN, known_hosts="# none\n"))
    assert c.key is not None
    assert c.password is None
    assert c.known_hosts == "# none\n"
    assert c.pins == {}


def test_credentials_with_pins_of_earlier_rounds(tmp_path: Path) -> None:
    fp = "SHA256:" + "A" * 43
    c = load_credentials(
        _creds(tmp_path, passwd="hunter22", token=TOKEN, host_key_pins=f"10.0.0.1 {fp}\n")
    )
    assert c.pins == {"10.0.0.1": fp}


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"token": TOKEN}, "exactly one"),
        ({"passwd": "a", "sshkey": "b", "token": TOKEN}, "exactly one"),
        ({"passwd": "a"}, "token"),
        ({"passwd": "a", "token": "hunter22-not-a-token"}, "bootstrap token"),
        ({"sshkey": "hunter22 is not a key", "token": TOKEN}, "private key"),
        ({"passwd": "\n", "token": TOKEN}, "empty"),
        ({"passwd": "hunter22", "token": TOKEN, "host_key_pins": "10.0.0.1 x"}, "host_key_pins"),
    ],
)
def test_bad_credentials_are_refused_without_echoing_them(
    tmp_path: Path, files: dict[str, str], match: str
) -> None:
    with pytest.raises(CredentialError, match=match) as e:
        load_credentials(_creds(tmp_path, **files))
    assert "hunter22" not in str(e.value)


def test_results_file_and_json_lines_are_views_of_one_document(tmp_path: Path) -> None:
    import io

    rs = [MachineResult(name="a", ip="10.0.0.1"), MachineResult(name="b", ip="10.0.0.2")]
    out = io.StringIO()
    lines: list[str] = []
    rep = Reporter(rs, out=out, results_path=tmp_path / "r.json", live=lines.append)
    rs[0].phase = MachinePhase.JOINED
    rs[0].add_time("connect", 0.5)
    rs[0].host_key = "SHA256:" + "A" * 43
    rep.finished(rs[0])
    rs[1].phase, rs[1].error = MachinePhase.FAILED, "connection refused on port 22"
    rep.finished(rs[1])
    rep.close()
    first = json.loads(out.getvalue().splitlines()[0])
    assert first["name"] == "a"
    assert first["phase"] == "joined"
    assert first["durations"] == {"connect": 0.5}
    doc = ResultsDoc.from_json((tmp_path / "r.json").read_text())
    assert doc == rep.document(done=True)
    assert doc.done is True
    assert list(doc.machines) == ["a", "b"]
    assert doc.machines["a"].durations == {"connect": 0.5}  # the file has the details
    for text in out.getvalue().splitlines():
        line = MachineResult.model_validate_json(text)
        assert line == doc.machines[line.name]
    assert "1/2 joined, 1 failed" in lines[-1]
    assert summary(rs)["total"] == 2
    assert summary(rs)["joined"] == summary(rs)["failed"] == 1


@pytest.mark.parametrize(
    ("uname", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64"), ("arm64", "arm64")]
)
def test_arch_from_uname(uname: str, arch: str) -> None:
    from penetrator.job.runner import pick_arch

    assert pick_arch(uname) == arch


@pytest.mark.parametrize("uname", ["mips64", "armv7l", "riscv64", "", "x86_64;rm -rf /"])
def test_other_arches_fail_clearly(uname: str) -> None:
    from penetrator.job.runner import pick_arch

    with pytest.raises(MachineError, match="unsupported architecture"):
        pick_arch(uname)


def test_probe_parsing() -> None:
    from penetrator.job.package import Package, parse_probe

    pkg = Package("amd64", Path("/x"), "ab" * 32, 1)
    assert parse_probe("ab" * 32 + "  ./packages/x.tgz", "yes", pkg) == (True, True)
    assert parse_probe("-", "no", pkg) == (False, False)
    assert parse_probe("cd" * 32 + "  ./packages/x.tgz", "no", pkg) == (False, False)


class _Scripted:
    """Answers `run` with a fixed text (the machine's output), records commands."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.commands: list[str] = []

    async def run(self, step: str, command: str, limit: float, *, input: str | None = None) -> str:
        self.commands.append(command)
        return self.text


async def test_prepare_reads_past_login_noise() -> None:
    from penetrator.job.package import Package
    from penetrator.job.runner import PROBE_MARK, prepare

    pkg = Package("amd64", Path("/x"), "ab" * 32, 1)
    text = "\n".join(
        [
            "Welcome! (motd printed by a login script)",
            PROBE_MARK,
            "x86_64",
            "/root/w",
            "t-1",
            "ab" * 32 + "  ./packages/" + "ab" * 32 + ".tgz",
            "no",
            "",
        ]
    )
    s = _Scripted(text)
    p = await prepare(s, "w", {"amd64": pkg}, 5)  # type: ignore[arg-type]
    assert (p.uname, p.work_dir, p.joined_label) == ("x86_64", "/root/w", "t-1")
    assert p.packages == {"amd64": (True, False)}
    assert s.commands[0].startswith(f"echo {PROBE_MARK} && uname -m")
    with pytest.raises(MachineError, match="unexpected output"):
        await prepare(_Scripted("x86_64\n/root/w\n"), "w", {"amd64": pkg}, 5)  # type: ignore[arg-type]
