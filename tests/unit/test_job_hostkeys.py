"""penetrator.job.hostkeys: tofu pins, strict, insecure; mismatch names both."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from penetrator.api.jobconfig import HostKeyPolicy
from penetrator.job.hostkeys import (
    HostKeyMismatch,
    HostKeyRevoked,
    HostKeyStore,
    HostKeyUnknown,
    fingerprint,
    write_pins,
)


def key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def line(host: str, k: asyncssh.SSHKey) -> str:
    return f"{host} {k.export_public_key('openssh').decode().strip()}\n"


def test_fingerprint_form() -> None:
    assert fingerprint(key()).startswith("SHA256:")


def test_tofu_pins_the_first_key_and_refuses_another() -> None:
    a, b = key(), key()
    s = HostKeyStore(HostKeyPolicy.TOFU)
    v = s.check("edge-a", "10.0.0.1", 22, a)
    assert v.pinned_now
    assert not v.insecure
    assert not s.check("edge-a", "10.0.0.1", 22, a).pinned_now  # a retry matches
    with pytest.raises(HostKeyMismatch) as e:
        s.check("edge-a", "10.0.0.1", 22, b)
    msg = str(e.value)
    assert "edge-a" in msg
    assert "10.0.0.1" in msg
    assert fingerprint(a) in msg
    assert fingerprint(b) in msg
    # another machine is independent
    assert s.check("edge-b", "10.0.0.2", 22, b).pinned_now
    assert s.new_pins == {"10.0.0.1": fingerprint(a), "10.0.0.2": fingerprint(b)}


def test_pins_round_trip_through_text(tmp_path: Path) -> None:
    a, b = key(), key()
    s = HostKeyStore(HostKeyPolicy.TOFU)
    s.check("edge-a", "10.0.0.1", 22, a)
    path = tmp_path / "pins"
    write_pins(path, s.pins_text())
    assert path.stat().st_mode & 0o777 == 0o600
    later = HostKeyStore(HostKeyPolicy.TOFU, pins=path.read_text())
    later.check("edge-a", "10.0.0.1", 22, a)
    with pytest.raises(HostKeyMismatch):
        later.check("edge-a", "10.0.0.1", 22, b)
    assert later.pins_text() == s.pins_text()  # loaded pins are written back


def test_tofu_trusts_the_users_known_hosts() -> None:
    a, b = key(), key()
    s = HostKeyStore(HostKeyPolicy.TOFU, user_known_hosts=line("10.0.0.1", a))
    assert not s.check("m", "10.0.0.1", 22, a).pinned_now
    with pytest.raises(HostKeyMismatch):
        s.check("m", "10.0.0.1", 22, b)


def test_strict_only_the_users_known_hosts() -> None:
    a, b = key(), key()
    s = HostKeyStore(
        HostKeyPolicy.STRICT, user_known_hosts=line("10.0.0.1", a), pins=line("10.0.0.2", b)
    )
    s.check("m", "10.0.0.1", 22, a)
    with pytest.raises(HostKeyUnknown, match="not in known_hosts"):
        s.check("n", "10.0.0.2", 22, b)  # pins do not count under strict
    with pytest.raises(HostKeyMismatch):
        s.check("m", "10.0.0.1", 22, b)


def test_insecure_accepts_anything_and_says_so() -> None:
    a = key()
    s = HostKeyStore(HostKeyPolicy.INSECURE, user_known_hosts=line("10.0.0.1", key()))
    v = s.check("m", "10.0.0.1", 22, a)
    assert v.insecure
    assert s.new_pins == {}


def test_revoked_is_refused() -> None:
    a = key()
    kh = "@revoked " + line("10.0.0.1", a)
    with pytest.raises(HostKeyRevoked):
        HostKeyStore(HostKeyPolicy.TOFU, user_known_hosts=kh).check("m", "10.0.0.1", 22, a)


def test_port_is_part_of_the_pin() -> None:
    a, b = key(), key()
    s = HostKeyStore(HostKeyPolicy.TOFU)
    s.check("m", "10.0.0.1", 2222, a)
    assert "[10.0.0.1]:2222 ssh-ed25519" in s.pins_text()
    later = HostKeyStore(HostKeyPolicy.TOFU, pins=s.pins_text())
    with pytest.raises(HostKeyMismatch):
        later.check("m", "10.0.0.1", 2222, b)


def test_fingerprint_pins_of_earlier_rounds_hold_under_tofu() -> None:
    a, b = key(), key()
    s = HostKeyStore(HostKeyPolicy.TOFU, fingerprints={"10.0.0.1": fingerprint(a)})
    v = s.check("edge-a", "10.0.0.1", 22, a)
    assert not v.pinned_now  # known from an earlier round: not learned again
    with pytest.raises(HostKeyMismatch) as e:
        s.check("edge-a", "10.0.0.1", 22, b)
    assert fingerprint(a) in str(e.value)
    assert fingerprint(b) in str(e.value)
    assert s.new_pins == {}
    # other machines are still trusted on first use
    assert s.check("edge-b", "10.0.0.2", 22, b).pinned_now
    assert s.new_pins == {"10.0.0.2": fingerprint(b)}


def test_fingerprint_pins_do_not_count_under_strict() -> None:
    a = key()
    s = HostKeyStore(HostKeyPolicy.STRICT, fingerprints={"10.0.0.1": fingerprint(a)})
    with pytest.raises(HostKeyUnknown):
        s.check("m", "10.0.0.1", 22, a)
