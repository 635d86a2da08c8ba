"""penetrator.plan.names: generated node names and the task label value."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penetrator.api import (
    MAX_LABEL_LENGTH,
    MAX_NODE_NAME_LENGTH,
    MAX_PREFIX_LENGTH,
    check_label_value,
    check_node_name,
    is_generated_name,
)
from penetrator.plan.names import (
    MAX_ATTEMPTS_PER_NAME,
    NameGenerationError,
    generate_node_names,
    random_suffix,
    task_label_value,
)

SUFFIX = re.compile(r"^[a-z0-9]{6}$")


class ScriptedRandom(random.Random):
    """Returns the characters of the given suffixes in turn."""

    def __init__(self, suffixes: Sequence[str]) -> None:
        super().__init__(0)
        self._chars = iter("".join(suffixes))

    def choice(self, seq: Sequence[str]) -> str:  # type: ignore[override]
        c = next(self._chars)
        assert c in seq
        return c


def test_seed_example() -> None:
    names = generate_node_names("edge", ["172.21.3.194", "172.21.3.195"], set(), random.Random(1))
    assert list(names.values()) == ["172.21.3.194", "172.21.3.195"]
    for name in names:
        assert name.startswith("edge-")
        assert SUFFIX.match(name.removeprefix("edge-"))
        assert is_generated_name("edge", name)


def test_deterministic_for_a_seed() -> None:
    ips = [f"10.0.0.{i}" for i in range(20)]
    assert generate_node_names("e", ips, set(), random.Random(7)) == generate_node_names(
        "e", ips, set(), random.Random(7)
    )


def test_duplicates_removed_in_order_and_canonical() -> None:
    names = generate_node_names(
        "edge",
        ["10.0.0.2", "FD00:0::1", "10.0.0.1", "10.0.0.2", "fd00::1"],
        set(),
        random.Random(2),
    )
    assert list(names.values()) == ["10.0.0.2", "fd00::1", "10.0.0.1"]


def test_taken_and_own_collisions_are_skipped() -> None:
    rng = ScriptedRandom(["aaaaaa", "bbbbbb", "aaaaaa", "bbbbbb", "cccccc"])
    names = generate_node_names("edge", ["10.0.0.1", "10.0.0.2"], {"edge-aaaaaa"}, rng)
    assert names == {"edge-bbbbbb": "10.0.0.1", "edge-cccccc": "10.0.0.2"}


def test_bounded_retries() -> None:
    rng = ScriptedRandom(["aaaaaa"] * (MAX_ATTEMPTS_PER_NAME + 1))
    with pytest.raises(NameGenerationError, match="after 100 attempts"):
        generate_node_names("edge", ["10.0.0.1"], {"edge-aaaaaa"}, rng)


def test_small_max_attempts() -> None:
    rng = ScriptedRandom(["aaaaaa", "aaaaaa", "bbbbbb"])
    with pytest.raises(NameGenerationError):
        generate_node_names("edge", ["10.0.0.1"], {"edge-aaaaaa"}, rng, max_attempts=2)


@pytest.mark.parametrize(
    ("prefix", "ips", "message"),
    [
        ("Edge_1", ["10.0.0.1"], "nodeNamePrefix: 'Edge_1' is not a DNS-1123 label"),
        ("e" * (MAX_PREFIX_LENGTH + 1), ["10.0.0.1"], "use at most 56"),
        ("edge", ["256.1.1.1"], "'256.1.1.1' is not an IPv4 or IPv6 address"),
        ("edge", ["1.2.3.4;rm -rf /"], "only hex digits"),
    ],
)
def test_bad_input(prefix: str, ips: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_node_names(prefix, ips, set(), random.Random(0))


def test_no_ips_no_names() -> None:
    assert generate_node_names("edge", [], set(), random.Random(0)) == {}


def test_random_suffix() -> None:
    assert SUFFIX.match(random_suffix(random.Random(3)))
    assert len(random_suffix(random.Random(3), 10)) == 10


prefixes = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,54}[a-z0-9])?\Z")
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
ip_lists = st.lists(st.one_of(ipv4s, ipv6s, st.sampled_from(["10.0.0.1", "fd00::1"])), max_size=60)


@given(
    prefix=prefixes,
    ips=ip_lists,
    taken=st.sets(st.text("abc0123456789-", min_size=1, max_size=12)),
    seed=st.integers(0, 2**32),
)
def test_properties(prefix: str, ips: list[str], taken: set[str], seed: int) -> None:
    names = generate_node_names(prefix, ips, taken, random.Random(seed))
    # one name per distinct address, in first-seen order
    assert list(names.values()) == list(dict.fromkeys(str(ipaddress.ip_address(i)) for i in ips))
    assert not set(names) & taken
    for name in names:
        assert is_generated_name(prefix, name)
        assert len(name) <= MAX_NODE_NAME_LENGTH
        assert check_node_name(name) is None


@given(prefix=prefixes, seed=st.integers(0, 2**32), crowd=st.integers(1, 30))
def test_names_the_same_random_source_would_draw_are_skipped(
    prefix: str, seed: int, crowd: int
) -> None:
    # `taken` holds exactly the first names this random source draws: every one of
    # them collides, and generation must step past all of them.
    probe = random.Random(seed)
    taken = {f"{prefix}-{random_suffix(probe)}" for _ in range(crowd)}
    names = generate_node_names(
        prefix, [f"10.0.0.{i}" for i in range(5)], taken, random.Random(seed)
    )
    assert len(names) == 5
    assert not set(names) & taken


# --- task label value ---------------------------------------------------------------


def test_task_label_seed_example() -> None:
    value = task_label_value("nodes", random.Random(0))
    assert re.fullmatch(r"nodes-[a-z0-9]{6}", value)


def test_task_label_long_name_is_cut() -> None:
    value = task_label_value("a" * 200, random.Random(0))
    assert len(value) == MAX_LABEL_LENGTH
    assert value.startswith("a" * 56 + "-")


def test_task_label_cut_never_ends_in_punctuation() -> None:
    name = "a" * 55 + ".b" + "c" * 10  # the cut falls right after the dot
    value = task_label_value(name, random.Random(0))
    assert value.startswith("a" * 55 + "-")
    assert check_label_value(value) is None


def test_task_label_bad_name() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        task_label_value("Nodes", random.Random(0))


@given(
    name=st.from_regex(
        r"\A[a-z0-9]([-a-z0-9]{0,60}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,8}\Z"
    ),
    seed=st.integers(0, 2**32),
)
def test_task_label_properties(name: str, seed: int) -> None:
    value = task_label_value(name, random.Random(seed))
    assert check_label_value(value) is None
    assert len(value) <= MAX_LABEL_LENGTH
    head, _, suffix = value.rpartition("-")
    assert SUFFIX.match(suffix)
    assert name.startswith(head)
