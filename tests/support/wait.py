"""Waiting for the system under test: bounded in time and in tries, and saying what
it waited for when it gives up (a test never sleeps a fixed time and hopes)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A wait ran out; an AssertionError so pytest reports it as the test's failure."""


def wait_for(
    predicate: Callable[[], T | None], what: str, timeout: float, interval: float = 0.5
) -> T:
    """Call `predicate` until it returns a truthy value and return that value.

    Gives up after `timeout` seconds or ceil(timeout / interval) + 1 tries, whichever
    comes first, raising WaitTimeout that names `what` and the last value seen."""
    if timeout <= 0 or interval <= 0:
        raise ValueError(f"wait_for({what!r}): timeout and interval must be positive")
    tries = math.ceil(timeout / interval) + 1
    deadline = time.monotonic() + timeout
    last: T | None = None
    for n in range(1, tries + 1):
        last = predicate()
        if last:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if n < tries:
            time.sleep(min(interval, left))
    raise WaitTimeout(
        f"timed out after {timeout:g}s ({n} tries) waiting for {what}; last value: {last!r}"
    )
