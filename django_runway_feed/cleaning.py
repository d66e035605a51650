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
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# CometAPI's answers nest four levels deep; a few dozen leaves room for any sane extension while
# keeping every later walk (ours, json.dumps, the database's) far from any recursion limit.
MAX_DEPTH = 32
# How much of an offending value a note shows (escaped, so a note is always printable ASCII).
NOTE_VALUE_CHARS = 200
# How much of one key a note's path shows: a 950 KB key must not make a 950 KB log line.
NOTE_KEY_CHARS = 80
# At most this many notes per body: one hostile body must not make a huge log line.
MAX_NOTES = 20
# How much of one gateway value goes into a log line or an exception message.
LOG_VALUE_CHARS = 300

# NUL and the surrogate range: a surrogate left in a decoded str has no partner (json pairs
# valid ones into one character), so every one of them is lone.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In JSON text a NUL or a surrogate can only come as a \u escape: raw control characters are
# invalid JSON, and text decoded from bytes holds no surrogates. A body without such an escape
# needs no string cleaning at all, the common case. (A literal prefix keeps the search fast.)
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89abAB])")
# What may not reach a log line raw: C0 and C1 controls (a newline would forge a record), DEL,
# the Unicode line and paragraph separators, and lone surrogates.
_UNLOGGABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


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


def loggable(value: Any, limit: int = LOG_VALUE_CHARS) -> str:
    """Gateway text fit for one log line or an exception message: cut, controls escaped.

    ``None`` is the empty string. A newline becomes ``\\n``, so a value can never start what
    looks like a log record of its own.
    """
    text = "" if value is None else str(value)
    cut = _UNLOGGABLE.sub(_escape_one, text[:limit])
    return cut + ("..." if len(text) > limit else "")


def _escape_one(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


def loads(raw: bytes | str) -> Cleaned:
    """Decode JSON and clean it. Raises ``ValueError`` (or ``RecursionError``) if not JSON.

    Bytes that are not valid in the body's encoding (UTF-8 unless a BOM or the JSON layout says
    otherwise) are replaced by U+FFFD, and noted: one stray byte must not cost the whole answer.
    """
    notes: list[Note] = []
    if isinstance(raw, bytes | bytearray):
        encoding = json.detect_encoding(raw)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            text = raw.decode(encoding, errors="replace")
            _note(notes, None, f"bytes that are not valid {encoding} replaced by U+FFFD")
        fix_strings = False
    else:
        # A str decoded by the caller may hold a surrogate (or a NUL) raw.
        text = raw
        fix_strings = _UNSTORABLE.search(text) is not None
    # json decodes NaN, Infinity and overflowing literals (1e400) to non-finite floats, and
    # \u0000 or \ud800 to str: the walk below finds them all, wherever they sit.
    value = json.loads(text)
    fix_strings = fix_strings or _SUSPECT_ESCAPE.search(text) is not None
    return Cleaned(_Walk(notes, fix_strings=fix_strings).value(value), tuple(notes))


def clean(value: Any) -> Cleaned:
    """Clean an already decoded JSON value (see the module's docstring).

    Containers are cleaned in place: pass a value you own (as :func:`loads` does).
    """
    notes: list[Note] = []
    return Cleaned(_Walk(notes, fix_strings=True).value(value), tuple(notes))


# A path is built only when a note needs it: (parent, key or index) pairs, None at the top.
_Path = tuple[Any, str | int] | None


def _render(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, segment = path
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append("." + loggable(segment, NOTE_KEY_CHARS))
    # Each key is cut already; a path 32 levels deep is cut as a whole too.
    return loggable("".join(reversed(parts)).removeprefix("."), NOTE_VALUE_CHARS)


def _note(notes: list[Note], path: _Path, problem: str, original: str = "") -> None:
    if len(notes) < MAX_NOTES:
        notes.append(Note(_render(path), problem, original))


# The types the walk must look into: containers and floats, and strings when they need it.
_OTHERS = frozenset({dict, list, float})
_STRING_AND_OTHERS = _OTHERS | {str}
# Lists longer than this are first checked for plain scalars in one C-level pass.
_PLAIN_CHECK_FROM = 16


class _Walk:
    """One pass over a decoded value, in place, in time linear in its size.

    Scalars cost one type test each; a path is rendered only for a note; strings are searched
    only when the text showed an escape that can decode to NUL or a surrogate.
    """

    def __init__(self, notes: list[Note], *, fix_strings: bool) -> None:
        self.notes = notes
        self.fix_strings = fix_strings

    def value(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict or kind is list:
            return self.container(value, None, 0)
        if kind is str:
            return self.text(value, None) if self.fix_strings else value
        if kind is float and value - value != 0:  # inf - inf and nan - nan are nan
            _note(self.notes, None, f"non-finite number {value!r} replaced by null")
            return None
        return value

    def container(self, value: Any, path: _Path, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            _note(self.notes, path, f"nested deeper than {MAX_DEPTH} levels, replaced by null")
            return None
        fix = self.fix_strings
        pairs: Iterable[tuple[Any, Any]]
        if type(value) is list:
            # One pass in C over the types: a wide list of plain scalars ends here.
            if len(value) > _PLAIN_CHECK_FROM and self._plain(value):
                return value
            pairs = enumerate(value)
        else:
            if fix and any(_UNSTORABLE.search(key) for key in value):
                value = {self.text(key, (path, key), is_key=True): v for key, v in value.items()}
            # Values are replaced in place, never keys: iterating while assigning is safe.
            pairs = value.items()
        for key, item in pairs:
            kind = type(item)
            if kind is dict or kind is list:
                value[key] = self.container(item, (path, key), depth + 1)
            elif kind is str:
                if fix:
                    value[key] = self.text(item, (path, key))
            elif kind is float and item - item != 0:  # inf - inf and nan - nan are nan
                _note(self.notes, (path, key), f"non-finite number {item!r} replaced by null")
                value[key] = None
        return value

    def _plain(self, items: Iterable[Any]) -> bool:
        """Nothing among ``items`` can need a change (no container, float, or string to fix)."""
        kinds = set(map(type, items))
        return not (kinds & (_STRING_AND_OTHERS if self.fix_strings else _OTHERS))

    def text(self, text: str, path: _Path, *, is_key: bool = False) -> str:
        if _UNSTORABLE.search(text) is None:
            return text
        cleaned = clean_text(text)
        what = "key" if is_key else "string"
        note_path = _render(path)
        if is_key and path is not None:
            # The key itself is what is wrong: shown escaped, as it came.
            parent = _render(path[0])
            note_path = escaped((f"{parent}." if parent else "") + text)
        if len(self.notes) < MAX_NOTES:
            self.notes.append(
                Note(
                    note_path,
                    f"NUL characters or lone surrogates removed from a {what}",
                    escaped(text),
                )
            )
        return cleaned


__all__ = [
    "MAX_DEPTH",
    "Cleaned",
    "Note",
    "clean",
    "clean_text",
    "escaped",
    "loads",
    "loggable",
]
