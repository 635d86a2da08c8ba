"""penetrator.api.hostkeys: the pins carried between a task's rounds."""

from __future__ import annotations

import pytest

from penetrator.api.hostkeys import (
    check_host_pattern,
    format_pins,
    hostkeys_configmap_name,
    merge_pins,
    parse_pins,
)

FP_A = "SHA256:" + "A" * 43
FP_B = "SHA256:" + "b/+9" * 10 + "xyz"


def test_name_is_cut_to_a_valid_object_name() -> None:
    assert hostkeys_configmap_name("nodes-cm") == "nodes-cm-hostkeys"
    long = hostkeys_configmap_name("a" * 253)
    assert len(long) == 253
    assert long.endswith("-hostkeys")


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
