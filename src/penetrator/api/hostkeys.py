"""Host-key pins carried from one round of a task to the next (pure).

Trust on first use means: the first key a machine presents is the one every later
connection of the task must present, across retries *and* rounds. A round's Job
dies with its pod, so what it learned travels through the cluster:

* the **Job** writes the pins it learned (``host pattern -> SHA256 fingerprint``)
  into the task's host-key ConfigMap ``<configmap-name>-hostkeys`` (see
  ``hostkeys_configmap_name``), key ``pins``;
* at the next round's start the **operator** merges them into the task's Secret,
  key ``host_key_pins``, where a pin once written is never replaced
  (``merge_pins``: a writer of the ConfigMap can add pins for machines never seen,
  which trust on first use would accept anyway, but cannot change a pinned key),
  and empties the ConfigMap;
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

from penetrator.api.constants import MAX_OBJECT_NAME_LENGTH
from penetrator.api.validation import check_ip

HOSTKEYS_SUFFIX: Final = "-hostkeys"
PINS_KEY: Final = "pins"
"""Data key of the host-key ConfigMap (what the Job learned in its round)."""
SECRET_PINS_KEY: Final = "host_key_pins"  # noqa: S105 - a key name
"""Key of the task's Secret (and so the file in the Job's credentials directory)."""
FINGERPRINT_RE: Final = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
_BRACKETED_RE: Final = re.compile(r"^\[([^\]]+)\]:([0-9]{1,5})$")


def hostkeys_configmap_name(configmap_name: str) -> str:
    """``<configmap-name>-hostkeys``, cut to stay a valid object name."""
    head = configmap_name[: MAX_OBJECT_NAME_LENGTH - len(HOSTKEYS_SUFFIX)].rstrip("-.")
    return head + HOSTKEYS_SUFFIX


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
