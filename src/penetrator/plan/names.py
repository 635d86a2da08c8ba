"""Generated names: node names ``<prefix>-<6 chars>`` and the task label value.

Pure: the randomness comes in as a ``random.Random`` (production passes
``random.SystemRandom()``; tests pass a seeded one).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Set

from penetrator.api import (
    MAX_LABEL_LENGTH,
    NAME_SUFFIX_ALPHABET,
    NAME_SUFFIX_LENGTH,
    canonical_ip,
    check_dns1123_subdomain,
    check_label_value,
    check_prefix,
)

MAX_ATTEMPTS_PER_NAME = 100
"""Draws per name before giving up (36**6 ~ 2.2e9 suffixes: a real collision streak
of this length means the random source is broken)."""


class NameGenerationError(ValueError):
    """No free name could be drawn within the bounded number of attempts."""


def random_suffix(rng: random.Random, length: int = NAME_SUFFIX_LENGTH) -> str:
    """``length`` random lowercase letters or digits."""
    return "".join(rng.choice(NAME_SUFFIX_ALPHABET) for _ in range(length))


def generate_node_names(
    prefix: str,
    ips: Iterable[str],
    taken: Set[str],
    rng: random.Random,
    *,
    max_attempts: int = MAX_ATTEMPTS_PER_NAME,
) -> dict[str, str]:
    """Node name -> IP for each distinct address of ``ips``, in first-seen order.

    Names are ``<prefix>-<6 random lowercase letters or digits>``, distinct from each
    other and from ``taken`` (existing Node names and names planned elsewhere).
    Addresses are compared and returned in canonical form, so ``fd00::1`` and
    ``fd00:0::1`` are one machine. Raises ``ValueError`` for a bad prefix or address
    and ``NameGenerationError`` when ``max_attempts`` draws for one name all collide.
    """
    if (problem := check_prefix(prefix)) is not None:
        raise ValueError(f"nodeNamePrefix: {problem}")
    machines: dict[str, None] = {}
    for ip in ips:
        machines.setdefault(canonical_ip(ip), None)
    names: dict[str, str] = {}
    for ip in machines:
        for _ in range(max_attempts):
            name = f"{prefix}-{random_suffix(rng)}"
            if name not in taken and name not in names:
                names[name] = ip
                break
        else:
            raise NameGenerationError(
                f"no free node name for {ip} after {max_attempts} attempts with prefix "
                f"{prefix!r}; check the random source"
            )
    return names


def task_label_value(task_name: str, rng: random.Random) -> str:
    """The task's value of ``app.superedge.io/node-label``: ``<task name>-<6 chars>``.

    The task name part is cut so that the value fits a label value (63 characters),
    and trailing '-', '.' of the cut are dropped, so the value stays valid.
    """
    if (problem := check_dns1123_subdomain(task_name)) is not None:
        raise ValueError(f"metadata.name: {problem}")
    head = task_name[: MAX_LABEL_LENGTH - 1 - NAME_SUFFIX_LENGTH].rstrip("-.")
    value = f"{head}-{random_suffix(rng)}"
    problem = check_label_value(value)
    assert problem is None, problem  # by construction
    return value
