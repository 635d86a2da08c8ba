"""Host-key pins carried from one round of a task to the next (pure).

Trust on first use means: the first key a machine presents is the one every later
connection of the task must present, across retries *and* rounds. A round's Job
dies with its pod, so what it learned travels through the cluster:

* the **Job** reports each machine's accepted host key in its results document
  (``MachineResult.host_key`` in ``penetrator.api.results``);
* at the next round's start the **operator** takes them from that document
  (``learned_pins``) and merges them into the task's Secret, key ``host_key_pins``,
  where a pin once written is never replaced (``merge_pins``: a writer of the
  results document can add pins for machines never seen, which trust on first use
  would accept anyway, but cannot change a pinned key);
* the next **Job** mounts the Secret and refuses a machine whose key differs.

Fingerprints, not whole keys: 5,000 of them stay far under an object's size limit
whatever the key type (an RSA key line is ~600 bytes, a fingerprint 50), and a
SHA-256 fingerprint pins the key as well as the key itself. Host keys are public:
the pins are kept in the Secret for its tighter access, not for secrecy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from penetrator.api.results import ResultsDoc
from penetrator.api.validation import check_ip

SECRET_PINS_KEY: Final = "host_key_pins"  # noqa: S105 - a key name
"""Key of the task's Secret (and so the file in the Job's credentials directory)."""
FINGERPRINT_RE: Final = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_BRACKETED_RE: Final = re.compile(r"^\[([^\]]+)\]:([0-9]{1,5})$")


def host_pattern(ip: str, port: int) -> str:
    """The known_hosts host field: ``ip`` on port 22, ``[ip]:port`` otherwise."""
    return ip if port == 22 else f"[{ip}]:{port}"


def check_host_pattern(pattern: str) -> str | None:
    """A problem with a pin's host field (``ip`` or ``[ip]:port``), or None."""
    m = _BRACKETED_RE.fullmatch(pattern)
    ip = m.group(1) if m else pattern
    if m and not 0 < int(m.group(2)) <= 65535:
        return f"{pattern!r}: port out of range"
    problem = check_ip(ip)
    return f"{pattern!r}: {problem}" if problem else None


def parse_pins(text: str) -> dict[str, str]:
    """``host fingerprint`` lines -> {host: fingerprint}. Blank and ``#`` lines are
    skipped; ``ValueError`` names the first bad line (a pin is never guessed)."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"pins line {number}: expected 'host SHA256:fingerprint'")
        host, fp = parts
        problem = check_host_pattern(host)
        if problem:
            raise ValueError(f"pins line {number}: {problem}")
        if not FINGERPRINT_RE.fullmatch(fp):
            raise ValueError(f"pins line {number}: not a SHA256 fingerprint")
        if pins.get(host, fp) != fp:
            raise ValueError(f"pins line {number}: {host} is pinned twice, to different keys")
        pins[host] = fp
    return pins


def format_pins(pins: Mapping[str, str]) -> str:
    """The text ``parse_pins`` reads, sorted (equal pins give equal text)."""
    return "".join(f"{host} {pins[host]}\n" for host in sorted(pins))


def merge_pins(kept: Mapping[str, str], learned: Mapping[str, str]) -> dict[str, str]:
    """``kept`` plus the pins of ``learned`` for hosts ``kept`` does not pin: a pin is
    never replaced (a changed key is the Job's to refuse, not ours to accept)."""
    merged = dict(learned)
    merged.update(kept)
    return merged


def learned_pins(doc: ResultsDoc, port: int) -> dict[str, str]:
    """host pattern -> fingerprint of the host keys a results document reports (the
    machines' addresses on ``port``). An entry that is not a usable pin is left out:
    a pin is never guessed."""
    pins: dict[str, str] = {}
    for name in sorted(doc.machines):
        entry = doc.machines[name]
        if entry.host_key is None or not FINGERPRINT_RE.fullmatch(entry.host_key):
            continue
        host = host_pattern(entry.ip, port)
        if check_host_pattern(host) is None:
            pins.setdefault(host, entry.host_key)
    return pins
