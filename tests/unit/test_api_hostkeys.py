"""penetrator.api.hostkeys: the pins kept per proxy node, across rounds and tasks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penetrator.api.hostkeys import (
    MAX_STORE_PINS,
    PinRefused,
    add_pin,
    check_host_pattern,
    effective_policy,
    format_pins,
    host_pattern,
    merge_pins,
    parse_pins,
    store_name,
    store_problem,
)
from penetrator.api.jobconfig import HostKeyPolicy

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


def test_a_store_is_named_by_the_proxy_nodes_uid_never_by_its_name() -> None:
    uid = "0f8c2a54-3f7e-4d1b-9e4e-2b1f0c9d8a7e"
    assert store_name(uid) == "penetrator-hostkeys-" + uid
    assert store_name(None) == "penetrator-hostkeys-direct"
    for bad in ["", "../x", "Node-A", "a" * 64, "x.y"]:
        with pytest.raises(ValueError, match="not a Node uid"):
            store_name(bad)


def test_add_pin_adds_keeps_and_never_replaces() -> None:
    pins = add_pin({}, "10.0.0.1", FP_A)
    assert pins == {"10.0.0.1": FP_A}
    assert add_pin(pins, "10.0.0.1", FP_A) == pins  # the same pin again: nothing new
    assert add_pin(pins, "[10.0.0.1]:2222", FP_B) == {"10.0.0.1": FP_A, "[10.0.0.1]:2222": FP_B}
    with pytest.raises(PinRefused, match=r"pinned to SHA256:A+ by an earlier task"):
        add_pin(pins, "10.0.0.1", FP_B)
    for host, fp in [("10.0.0.1;x", FP_A), ("10.0.0.1", "SHA256:short")]:
        with pytest.raises(PinRefused, match="not a pin"):
            add_pin({}, host, fp)


def test_a_full_store_refuses_a_new_pin_but_not_a_known_one() -> None:
    full = {f"10.{i // 65536}.{i // 256 % 256}.{i % 256}": FP_A for i in range(MAX_STORE_PINS)}
    with pytest.raises(PinRefused, match="store is full"):
        add_pin(full, "11.0.0.1", FP_A)
    assert add_pin(full, "10.0.0.0", FP_A) == full
    # bounded: the biggest lines still fit a ConfigMap
    worst = {f"[fd00::{i:x}:ffff:ffff:ffff]:65535": FP_B for i in range(MAX_STORE_PINS)}
    assert len(format_pins(worst).encode()) < 900 * 1024


@pytest.mark.parametrize("policy", list(HostKeyPolicy))
def test_a_known_hosts_makes_the_check_strict(policy: HostKeyPolicy) -> None:
    assert effective_policy(policy, has_known_hosts=True) is HostKeyPolicy.STRICT
    assert effective_policy(policy, has_known_hosts=False) is policy


def test_an_unparsable_store_is_a_problem_naming_the_line() -> None:
    assert store_problem(None) is None
    assert store_problem({"pins": ""}) is None
    assert store_problem({"pins": f"10.0.0.1 {FP_A}\n"}) is None
    problem = store_problem({"pins": f"10.0.0.1 {FP_A}\n10.0.0.2 junk\n"})
    assert problem == (
        "key pins: pins line 2: not a SHA256 fingerprint; correct or delete that line"
    )
    twice = store_problem({"pins": f"10.0.0.1 {FP_A}\n10.0.0.1 {FP_B}\n"})
    assert twice is not None
    assert "pinned twice" in twice
