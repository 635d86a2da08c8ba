"""penetrator.api.hostkeys: the pins carried between a task's rounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penetrator.api.hostkeys import (
    check_host_pattern,
    format_pins,
    host_pattern,
    learned_pins,
    merge_pins,
    parse_pins,
)
from penetrator.api.results import MachineResult, ResultsDoc

FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "b/+9" * 10 + "xyz"


def test_round_trip_sorted() -> None:
    pins = {"[fd00::1]:2222": FP_B, "10.0.0.2": FP_A, "10.0.0.1": FP_B}
    text = format_pins(pins)
    assert text.splitlines()[0].startswith("10.0.0.1 ")
    assert parse_pins(text) == pins
    assert parse_pins("# comment\n\n" + text) == pins
    assert format_pins({}) == ""
    assert parse_pins("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.1", "expected 'host SHA256:fingerprint'"),
        (f"10.0.0.1 {FP_A} extra", "expected"),
        (f"not-an-ip {FP_A}", "not-an-ip"),
        (f"10.0.0.1;rm {FP_A}", "10.0.0.1;rm"),
        (f"[10.0.0.1]:0 {FP_A}", "port out of range"),
        (f"[10.0.0.1]:70000 {FP_A}", "port out of range"),
        ("10.0.0.1 MD5:aa:bb", "not a SHA256 fingerprint"),
        ("10.0.0.1 SHA256:short", "not a SHA256 fingerprint"),
        (f"10.0.0.1 {FP_A}\n10.0.0.1 {FP_B}", "pinned twice"),
    ],
)
def test_bad_lines_are_refused_with_their_number(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="pins line") as e:
        parse_pins(text)
    assert problem in str(e.value)


def test_host_patterns() -> None:
    assert check_host_pattern("10.0.0.1") is None
    assert check_host_pattern("fd00::1") is None
    assert check_host_pattern("[10.0.0.1]:2222") is None
    assert check_host_pattern("[10.0.0.1]:x") is not None


def test_merge_never_replaces_a_pin() -> None:
    kept = {"10.0.0.1": FP_A}
    learned = {"10.0.0.1": FP_B, "10.0.0.2": FP_B}
    assert merge_pins(kept, learned) == {"10.0.0.1": FP_A, "10.0.0.2": FP_B}
    assert merge_pins({}, learned) == learned
    assert merge_pins(kept, {}) == kept


_HOSTS = st.sampled_from(["10.0.0.1", "10.0.0.2", "[10.0.0.3]:2222", "fd00::1"])
_FPS = st.sampled_from([FP_A, FP_B, "SHA256:" + "C" * 43])


@given(
    kept=st.dictionaries(_HOSTS, _FPS),
    learned=st.lists(st.dictionaries(_HOSTS, _FPS), max_size=4),
)
def test_rounds_of_merges_never_replace_a_pin(
    kept: dict[str, str], learned: list[dict[str, str]]
) -> None:
    """Whatever later rounds report, a host keeps the first fingerprint pinned for it."""
    first: dict[str, str] = dict(kept)
    pins = dict(kept)
    for report in learned:
        pins = merge_pins(pins, report)
        for host, fp in report.items():
            first.setdefault(host, fp)
    assert pins == first


def test_host_patterns_of_a_port() -> None:
    assert host_pattern("10.0.0.1", 22) == "10.0.0.1"
    assert host_pattern("fd00::1", 2222) == "[fd00::1]:2222"


def test_pins_are_learned_from_a_results_document() -> None:
    doc = ResultsDoc(
        machines={
            "a": MachineResult(ip="10.0.0.1", host_key=FP_A),
            "b": MachineResult(ip="10.0.0.2"),  # never connected: nothing to pin
            "c": MachineResult(ip="10.0.0.3", host_key="SHA256:short"),  # never guessed
            "d": MachineResult(ip="not-an-ip", host_key=FP_A),
        }
    )
    assert learned_pins(doc, 22) == {"10.0.0.1": FP_A}
    assert learned_pins(doc, 2222) == {"[10.0.0.1]:2222": FP_A}
    assert learned_pins(ResultsDoc(), 22) == {}
