"""The escaping of human output: nothing a terminal acts on survives, and nothing is lost."""

from __future__ import annotations

import codecs

from hypothesis import given
from hypothesis import strategies as st

from ctrlsock.cli.render import escape

# Every code point except lone surrogates, which only file names that are not UTF-8 carry (tested apart).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


def unescape(text: str) -> str:
    return codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")


@given(TEXT)
def test_escaped_text_is_printable_and_reads_back(text: str) -> None:
    escaped = escape(text)
    assert escaped.isprintable() or escaped == ""
    assert unescape(escaped) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))))
def test_printable_text_without_backslashes_is_unchanged(text: str) -> None:
    text = text.replace("\\", "")
    assert escape(text) == text


def test_terminal_controls_become_the_escapes_ls_would_show() -> None:
    assert escape("a\x1b[2Jb\nc\rd\te\\f\x7f\x9b\u202e") == "a\\x1b[2Jb\\nc\\rd\\te\\\\f\\x7f\\x9b\\u202e"
    assert escape("caf\u00e9 \u4e2d") == "caf\u00e9 \u4e2d"


def test_a_name_that_is_not_utf8_shows_its_bytes() -> None:
    name = b"sock\xff\x1b.sock".decode("utf-8", "surrogateescape")
    assert escape(name) == "sock\\xff\\x1b.sock"
