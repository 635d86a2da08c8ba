"""Host-key policy: trust on first use with pinning (default), strict, insecure.

``HostKeyStore.check`` is called from inside the SSH handshake, before any
credential is sent, so an impostor never sees the password. Pins learned in
this run are kept in memory (every retry must match them) and written out with
``pins_text`` (a known_hosts file for ``--known-hosts-out``). In a cluster each
machine's result reports the key accepted for it (``Verdict.fingerprint``); the
Job stores a first-sight pin in the proxy node's store before the join
(``penetrator.job.pinstore``), and every later Job of that proxy node gets the
store's pins as ``fingerprints`` (see ``penetrator.api.hostkeys``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from penetrator.api.hostkeys import host_pattern
from penetrator.api.jobconfig import HostKeyPolicy


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:<base64>``, as ``ssh-keygen -l`` prints it."""
    fp: str = key.get_fingerprint("sha256")
    return fp


class HostKeyError(Exception):
    """The machine's host key is refused (never retried)."""


class HostKeyMismatch(HostKeyError):
    def __init__(self, machine: str, ip: str, expected: list[str], got: str) -> None:
        self.machine, self.ip, self.expected, self.got = machine, ip, expected, got
        super().__init__(
            f"host key of {machine} ({ip}) changed: expected {', '.join(expected)}, got {got}"
        )


class HostKeyUnknown(HostKeyError):
    def __init__(self, machine: str, ip: str, got: str) -> None:
        self.machine, self.ip, self.got = machine, ip, got
        super().__init__(
            f"host key of {machine} ({ip}) is not in known_hosts (policy strict); "
            f"it presented {got}"
        )


class HostKeyRevoked(HostKeyError):
    def __init__(self, machine: str, ip: str, got: str) -> None:
        super().__init__(f"host key of {machine} ({ip}) {got} is marked @revoked in known_hosts")


@dataclass(frozen=True)
class Verdict:
    fingerprint: str
    pinned_now: bool  # tofu: first sight, pinned in this run
    insecure: bool  # accepted without any check


class HostKeyStore:
    """Expected host keys per (ip, port), and the decision for a presented key."""

    def __init__(
        self,
        policy: HostKeyPolicy,
        user_known_hosts: str | None = None,
        pins: str | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self._fingerprints = dict(fingerprints or {})  # host pattern -> SHA256 (earlier rounds)
        self._user = asyncssh.import_known_hosts(user_known_hosts) if user_known_hosts else None
        self._pins_file = asyncssh.import_known_hosts(pins) if pins else None
        self._lines: dict[str, list[str]] = {}  # host pattern -> known_hosts lines (for output)
        if pins:
            self._remember_lines(pins)
        self._new: dict[str, asyncssh.SSHKey] = {}
        self._lock = threading.Lock()

    def _remember_lines(self, text: str) -> None:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("@"):
                continue
            host = line.split(None, 1)[0]
            self._lines.setdefault(host, []).append(line)

    def _match(
        self, kh: asyncssh.SSHKnownHosts | None, ip: str, port: int
    ) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        if kh is None:
            return [], []
        found = kh.match(ip, ip, port)
        return list(found[0]), list(found[2])

    def expected(self, ip: str, port: int) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
        """(trusted keys, revoked keys) for the machine under this policy."""
        trusted, revoked = self._match(self._user, ip, port)
        if self.policy is HostKeyPolicy.TOFU:
            pinned, revoked2 = self._match(self._pins_file, ip, port)
            trusted += pinned
            revoked += revoked2
            with self._lock:
                new = self._new.get(host_pattern(ip, port))
            if new is not None:
                trusted.append(new)
        return trusted, revoked

    def check(self, machine: str, ip: str, port: int, key: asyncssh.SSHKey) -> Verdict:
        """Accept (returning the verdict) or raise a HostKeyError."""
        got = fingerprint(key)
        if self.policy is HostKeyPolicy.INSECURE:
            return Verdict(got, pinned_now=False, insecure=True)
        trusted, revoked = self.expected(ip, port)
        if any(_same(key, r) for r in revoked):
            raise HostKeyRevoked(machine, ip, got)
        if any(_same(key, t) for t in trusted):
            return Verdict(got, pinned_now=False, insecure=False)
        pinned = self._fingerprints.get(host_pattern(ip, port))
        if self.policy is HostKeyPolicy.TOFU and pinned is not None:
            if got == pinned:
                return Verdict(got, pinned_now=False, insecure=False)
            trusted_fps = {fingerprint(t) for t in trusted} | {pinned}
            raise HostKeyMismatch(machine, ip, sorted(trusted_fps), got)
        if trusted:
            raise HostKeyMismatch(machine, ip, sorted({fingerprint(t) for t in trusted}), got)
        if self.policy is HostKeyPolicy.STRICT:
            raise HostKeyUnknown(machine, ip, got)
        with self._lock:  # tofu, first sight (re-check: a concurrent pin wins)
            pattern = host_pattern(ip, port)
            earlier = self._new.get(pattern)
            if earlier is None:
                self._new[pattern] = key
                return Verdict(got, pinned_now=True, insecure=False)
        if _same(earlier, key):
            return Verdict(got, pinned_now=False, insecure=False)
        raise HostKeyMismatch(machine, ip, [fingerprint(earlier)], got)

    @property
    def new_pins(self) -> dict[str, str]:
        """host pattern -> fingerprint of the keys pinned in this run."""
        with self._lock:
            return {h: fingerprint(k) for h, k in self._new.items()}

    def pins_text(self) -> str:
        """Every pin (loaded and new), OpenSSH known_hosts format, sorted."""
        with self._lock:
            lines = {h: list(ls) for h, ls in self._lines.items()}
            for h, k in self._new.items():
                lines.setdefault(h, []).append(
                    f"{h} {k.export_public_key('openssh').decode().strip()}"
                )
        return "".join(line + "\n" for h in sorted(lines) for line in lines[h])


def _same(a: asyncssh.SSHKey, b: asyncssh.SSHKey) -> bool:
    return bytes(a.public_data) == bytes(b.public_data)


def write_pins(path: Path, text: str) -> None:
    """Atomically, mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
