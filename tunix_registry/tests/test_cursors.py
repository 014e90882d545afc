"""The text layer of the page cursors: urlsafe base64 without padding, refused when foreign."""

from __future__ import annotations

import base64

import pytest

from evaluations import selectors as evaluation_selectors
from runs import selectors as run_selectors
from tunix_registry.cursors import InvalidCursor, cursor_pack, cursor_unpack


@pytest.mark.parametrize(
    "raw",
    ["", "7", "2026-01-02T03:04:05.123456+00:00|6f1c2a4e-0b7d-4c55-9a0e-3d2f1b6c8e90", "é|ß"],
)
def test_round_trip(raw: str) -> None:
    cursor = cursor_pack(raw)
    assert cursor_unpack(cursor) == raw
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor


@pytest.mark.parametrize("raw", ["a", "ab", "abc", "abcd"])
def test_padding_is_stripped_and_restored(raw: str) -> None:
    padded = base64.urlsafe_b64encode(raw.encode()).decode()
    assert cursor_pack(raw) == padded.rstrip("=")
    # A cursor with its padding kept is the same cursor.
    assert cursor_unpack(padded) == raw


def test_urlsafe_alphabet() -> None:
    # Standard base64 of these bytes is "w7/Dvj8+": a cursor has "_" and "-" instead.
    assert cursor_pack("\u00ff\u00fe?>") == "w7_Dvj8-"
    assert cursor_unpack("w7_Dvj8-") == "\u00ff\u00fe?>"


@pytest.mark.parametrize("cursor", ["a", "abcde", "é", "_-_-"])
def test_bad_cursor(cursor: str) -> None:
    # Impossible lengths, not ASCII, or bytes that are not UTF-8.
    with pytest.raises(InvalidCursor) as caught:
        cursor_unpack(cursor)
    assert str(caught.value) == "cursor is not a valid page cursor"


def test_selectors_raise_the_same_error() -> None:
    assert run_selectors.InvalidCursor is InvalidCursor
    assert evaluation_selectors.InvalidCursor is InvalidCursor
    with pytest.raises(InvalidCursor) as caught:
        run_selectors.cursor_decode(cursor_pack("not a timestamp|nor an id"))
    assert str(caught.value) == "cursor is not a valid page cursor"
