"""Cleaning provider JSON where it is decoded: pure, no database."""

from __future__ import annotations

import json

from django_runway_feed import cleaning
from tests.conftest import unclean


def test_cleaning_loads_non_finite_numbers_become_null_and_are_noted():
    cleaned = cleaning.loads(b'{"a": NaN, "b": [Infinity, -Infinity], "c": 1e400, "d": 1.5}')

    assert cleaned.value == {"a": None, "b": [None, None], "c": None, "d": 1.5}
    assert [note.path for note in cleaned.notes] == ["a", "b[0]", "b[1]", "c"]


def test_cleaning_loads_nul_and_lone_surrogates_removed_from_keys_and_values():
    cleaned = cleaning.loads(r'{"k\u0000ey": "v\u0000a\ud800l\udfff", "pair": "\ud83d\ude00"}')

    assert cleaned.value == {"key": "val", "pair": "\U0001f600"}
    assert str(cleaned.note_at("key")) == (
        "key: NUL characters or lone surrogates removed from a string "
        "(was 'v\\x00a\\ud800l\\udfff')"
    )


def test_cleaning_loads_containers_deeper_than_the_cap_become_null():
    depth = cleaning.MAX_DEPTH + 5
    cleaned = cleaning.loads('{"a": ' + "[" * depth + "]" * depth + ', "b": 1}')

    assert cleaned.value["b"] == 1
    assert unclean(cleaned.value) == []
    assert json.dumps(cleaned.value).count("[") == cleaning.MAX_DEPTH - 1
    assert "nested deeper than" in cleaned.notes[0].problem


def test_cleaning_loads_clean_json_unchanged_without_notes():
    body = {"code": "success", "data": {"task_id": "t-1", "progress": 0.5, "list": [1, "x"]}}

    cleaned = cleaning.loads(json.dumps(body))

    assert cleaned == cleaning.Cleaned(body)
