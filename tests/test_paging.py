"""The trip list's cursor: it carries a place exactly, and nothing a client changes or makes is accepted."""

from __future__ import annotations

import string
import uuid
from datetime import UTC, datetime

import pytest

from taxi.errors import ValidationFailed
from taxi.paging import START, Keyset, decode_cursor, encode_cursor

SECRET = "s" * 40


@pytest.mark.parametrize(
    "place",
    [
        Keyset(datetime(2026, 11, 30, 11, 41, 28, 123456, tzinfo=UTC), uuid.uuid4()),
        Keyset(datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0)),
        START,
    ],
)
def test_a_cursor_names_its_place_to_the_microsecond(place):
    text = encode_cursor(place, SECRET)
    assert set(text) <= set(string.ascii_letters + string.digits + "-_")  # nothing to escape in a query string
    assert decode_cursor(text, SECRET) == place


def test_every_single_character_change_is_refused():
    text = encode_cursor(Keyset.of("2026-11-30T11:41:28.123456Z", str(uuid.uuid4())), SECRET)
    for i, char in enumerate(text):
        for other in {"A", "f", "-"} - {char}:
            with pytest.raises(ValidationFailed) as refused:
                decode_cursor(text[:i] + other + text[i + 1 :], SECRET)
            assert list(refused.value.errors) == ["cursor"]


@pytest.mark.parametrize("text", ["", "=", "abc", "é" * 20, "A" * 55, "A" * 10_000, "%%%%"])
def test_what_is_not_a_cursor_of_ours_is_refused(text):
    with pytest.raises(ValidationFailed):
        decode_cursor(text, SECRET)
    place = Keyset(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor(place, "another-" + SECRET), SECRET)
