"""The one boundary where JSON from outside becomes data we keep (no I/O, no models).

Valid JSON can still hold values no database column takes: ``NaN`` and ``Infinity`` (and
numbers such as ``1e400`` that Python decodes to infinity), ``\\u0000`` (PostgreSQL's text and
``jsonb`` refuse it), lone surrogates such as ``\\ud800`` (not encodable as UTF-8), and nesting
deep enough to exhaust the stack of whoever serialises it next. :func:`loads` decodes a body and
cleans it once: non-finite numbers become ``null``, every string (keys included) loses its NUL
characters and lone surrogates, containers nested deeper than :data:`MAX_DEPTH` become ``null``.
Each change is noted, so the caller can say what it dropped. Code behind this boundary (the
parser, the planner, the writes) trusts what it gets.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# CometAPI's answers nest four levels deep; a few dozen leaves room for any sane extension while
# keeping every later walk (ours, json.dumps, the database's) far from any recursion limit.
MAX_DEPTH = 32
# How much of an offending value a note shows (escaped, so a note is always printable ASCII).
NOTE_VALUE_CHARS = 200
# At most this many notes per body: one hostile body must not make a huge log line.
MAX_NOTES = 20

# NUL and the surrogate range: a surrogate left in a decoded str has no partner (json pairs
# valid ones into one character), so every one of them is lone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Note:
    """One change made while cleaning: where (``data.task_id``, ``data.items[2]``) and what."""

    path: str
    problem: str
    original: str = ""

    def __str__(self) -> str:
        where = self.path or "the top level"
        return f"{where}: {self.problem}" + (f" (was {self.original})" if self.original else "")


@dataclass(frozen=True)
class Cleaned:
    """A cleaned JSON value and the notes of what cleaning changed (empty when nothing)."""

    value: Any
    notes: tuple[Note, ...] = ()

    def note_at(self, path: str) -> Note | None:
        return next((note for note in self.notes if note.path == path), None)


def escaped(text: str, *, limit: int = NOTE_VALUE_CHARS) -> str:
    """``text`` as an ASCII literal an operator can read and copy (``'abc\\x00def'``)."""
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def clean_text(text: str) -> str:
    """``text`` without NUL characters and lone surrogates: storable in any text column."""
    return _UNSTORABLE.sub("", text)


def loads(raw: bytes | str) -> Cleaned:
    """Decode JSON and clean it. Raises ``ValueError`` (or ``RecursionError``) if not JSON."""
    # json decodes NaN, Infinity and overflowing literals (1e400) to non-finite floats, and
    # \u0000 or \ud800 to str: the walk below finds them all, wherever they sit.
    return clean(json.loads(raw))


def clean(value: Any) -> Cleaned:
    """Clean an already decoded JSON value (see the module's docstring)."""
    notes: list[Note] = []
    cleaned = _clean(value, "", 0, notes)
    return Cleaned(cleaned, tuple(notes))


def _note(notes: list[Note], path: str, problem: str, original: str = "") -> None:
    if len(notes) < MAX_NOTES:
        notes.append(Note(path, problem, original))


def _clean(value: Any, path: str, depth: int, notes: list[Note]) -> Any:
    if isinstance(value, str):
        return _clean_str(value, path, notes)
    if isinstance(value, float) and not math.isfinite(value):
        _note(notes, path, f"non-finite number {value!r} replaced by null")
        return None
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            _note(notes, path, f"nested deeper than {MAX_DEPTH} levels, replaced by null")
            return None
        if isinstance(value, list):
            return [
                _clean(item, f"{path}[{index}]", depth + 1, notes)
                for index, item in enumerate(value)
            ]
        result: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = _clean_str(key, f"{path}.{key}" if path else key, notes, is_key=True)
            child = f"{path}.{clean_key}" if path else clean_key
            result[clean_key] = _clean(item, child, depth + 1, notes)
        return result
    return value


def _clean_str(text: str, path: str, notes: list[Note], *, is_key: bool = False) -> str:
    cleaned = clean_text(text)
    if cleaned != text:
        what = "key" if is_key else "string"
        _note(
            notes,
            path if not is_key else escaped(path),
            f"NUL characters or lone surrogates removed from a {what}",
            escaped(text),
        )
    return cleaned


__all__ = ["MAX_DEPTH", "Cleaned", "Note", "clean", "clean_text", "escaped", "loads"]
