"""What a machine says is stripped of control characters before it reaches a result
(and so status, Events and a terminal): ``strip_control`` / ``machine_text``."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from penetrator.api import MAX_ERROR_LENGTH, machine_text, strip_control
from penetrator.api.results import MachineResult, ResultsDoc

ESCAPES = st.sampled_from(
    [
        "\x1b[31m",
        "\x1b[2J",
        "\x1b[0;0H",
        "\x1b]0;owned\x07",
        "\x1b]8;;http://x\x1b\\",
        "\x1bP1$r\x1b\\",
        "\x1bc",
        "\x1b",
        "\x9b31m",
        "\u202e",
        "\x07",
        "\r",
        "\x00",
    ]
)
TEXT = st.lists(st.one_of(st.text(), ESCAPES)).map("".join)
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(c: str) -> bool:
    return (unicodedata.category(c) == "Cc" and c not in "\t\n") or c in BIDI


@given(TEXT)
def test_no_control_character_survives(text: str) -> None:
    assert not any(_unsafe(c) for c in strip_control(text))


@given(TEXT)
def test_machine_text_is_one_short_printable_line(text: str) -> None:
    out = machine_text(text)
    assert not any(unicodedata.category(c) == "Cc" or c in BIDI for c in out)
    assert len(out.encode()) <= MAX_ERROR_LENGTH


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc",), blacklist_characters=BIDI)))
def test_printable_text_is_kept(text: str) -> None:
    assert strip_control(text) == text


@given(TEXT)
def test_idempotent(text: str) -> None:
    once = strip_control(text)
    assert strip_control(once) == once


def test_escape_sequences_go_whole() -> None:
    assert strip_control("\x1b[1;31merror\x1b[0m: \x1b]0;title\x07disk full") == "error: disk full"
    assert machine_text("a\r\nb\tc") == "a b c"


def test_a_result_cleans_errors_and_warnings_as_they_are_set() -> None:
    r = MachineResult(name="m", ip="10.0.0.1", warnings=["\x1b[2Jcleared"])
    r.error = "join: \x1b[31mfailed\x1b[0m\x1b]0;pwned\x07"
    assert r.error == "join: failed"
    assert r.warnings == ["cleared"]


def test_a_document_read_back_is_clean() -> None:
    """The operator reads what a Job wrote: the document's own checks clean it again."""
    raw = '{"version": 2, "warnings": ["\\u001b[5mx"], "machines": {"m": {"ip": "10.0.0.1",'
    raw += ' "error": "\\u001b[31mbad\\u009b2J"}}}'
    doc = ResultsDoc.from_configmap_data({"results.json": raw})
    assert doc is not None
    assert doc.warnings == ["x"]
    assert doc.machines["m"].error == "bad"
