"""Host-key pins kept cluster-wide, per proxy node (pure: names, format, decisions).

Trust on first use means: the first key a machine presents is the one every later
connection must present, across retries, rounds *and tasks*. So pins are not a
task's: they are kept per (proxy node, address, port), where the address means one
machine, in one ConfigMap per proxy node in the operator's namespace
(``store_name``: named by the proxy Node's uid, never by a string a user writes;
``direct`` for Jobs in the control plane). Host keys are public; a ConfigMap is
enough, and it stays bounded (``MAX_STORE_PINS`` fingerprints, under 800 KiB).

* The **operator** creates the store (empty) before a round's Job and names it in
  the job config (``JobConfig.host_key_store``); the Job's Role may get and patch
  that one object.
* The **Job** reads it at start (a store it cannot parse fails the task with the
  line named: a pin is never dropped) and, when it pins a key on first sight, adds
  the pin (``add_pin``: never replacing one) with a write conditioned on the
  object's resourceVersion, and sends a machine the join token only after that
  write succeeded (``penetrator.job.pinstore``, ``penetrator.job.runner``).
* A ``known_hosts`` key in the task's credential Secret makes the check strict for
  that task (``effective_policy``): only the user's keys, no first use.

Fingerprints, not whole keys: a SHA-256 fingerprint pins the key as well as the key
itself, and 50 bytes keep thousands of them in one object.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from penetrator.api.jobconfig import HostKeyPolicy
from penetrator.api.validation import check_ip

SECRET_PINS_KEY: Final = "host_key_pins"  # noqa: S105 - a key name
"""Key of pins in a credentials directory (``penetrator job`` outside a cluster)."""
STORE_PREFIX: Final = "penetrator-hostkeys-"
STORE_PINS_KEY: Final = "pins"
"""Data key of a store ConfigMap: ``host SHA256:fingerprint`` lines (``format_pins``)."""
STORE_PROXY_ANNOTATION: Final = "penetrator.superedge.io/proxy-node"
"""On a store: the proxy node's name, for people (the name is by uid)."""
DIRECT: Final = "direct"
MAX_STORE_PINS: Final = 8000
"""Pins per store: 8,000 lines of at most 99 bytes (an IPv6 host on a port and a
fingerprint) stay under 800 KiB, far from a ConfigMap's 1 MiB."""
_UID_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
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


class PinRefused(ValueError):
    """A pin cannot be added (the message says why and what to do)."""


def store_name(proxy_node_uid: str | None) -> str:
    """The store of a proxy node, by its Node's uid (None: the Job runs in the control
    plane, ``direct``)."""
    if proxy_node_uid is None:
        return STORE_PREFIX + DIRECT
    if not _UID_RE.fullmatch(proxy_node_uid):
        raise ValueError(f"not a Node uid: {proxy_node_uid!r}")
    return STORE_PREFIX + proxy_node_uid


def store_problem(data: Mapping[str, str] | None) -> str | None:
    """What is wrong with a store's ``data`` (the first bad line and the fix), or None."""
    try:
        parse_pins((data or {}).get(STORE_PINS_KEY, ""))
    except ValueError as e:
        return f"key {STORE_PINS_KEY}: {e}; correct or delete that line"
    return None


def add_pin(pins: Mapping[str, str], host: str, fp: str) -> dict[str, str]:
    """``pins`` with ``host`` pinned to ``fp``. The same pin again changes nothing; a
    different one for a pinned host is refused (another Job pinned first: the key
    changed between the two looks), as is a pin beyond ``MAX_STORE_PINS``."""
    problem = check_host_pattern(host)
    if problem or not FINGERPRINT_RE.fullmatch(fp):
        raise PinRefused(f"not a pin: {host} {fp}")
    old = pins.get(host)
    if old is not None and old != fp:
        raise PinRefused(f"host key of {host} is pinned to {old} by an earlier task, got {fp}")
    if old is None and len(pins) >= MAX_STORE_PINS:
        raise PinRefused(
            f"the proxy node's host-key store is full ({MAX_STORE_PINS} pins): remove the "
            "lines of machines that are gone from its ConfigMap"
        )
    return merge_pins(pins, {host: fp})


def effective_policy(policy: HostKeyPolicy, has_known_hosts: bool) -> HostKeyPolicy:
    """A task whose credential Secret has a ``known_hosts`` is checked strictly: its
    machines must present a key the user listed (first use is not trusted)."""
    return HostKeyPolicy.STRICT if has_known_hosts else policy
