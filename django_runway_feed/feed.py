"""Pure parsing of CometAPI feed payloads into :class:`FeedSnapshot` (no I/O, no models).

CometAPI's feed format is only partly documented (see ``shared/COMETAPI.md``), so the parser
accepts every shape the documentation allows and treats every value as untrusted: whatever JSON
comes in, the result is a :class:`FeedSnapshot` or a :class:`~.exceptions.RunwayFeedError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .cleaning import loggable
from .exceptions import InvalidResponseError, TaskNotVisibleError
from .statuses import RANK, TERMINAL_STATUSES, Status


class Output(NamedTuple):
    kind: str  # "video", "poster", "last_frame"
    url: str


@dataclass(frozen=True)
class FeedSnapshot:
    task_id: str
    status: Status | None  # None: no known raw status, keep the current one
    provider_status: str = ""
    provider_inner_status: str = ""
    progress: int | None = None
    outputs: tuple[Output, ...] = ()
    failure_code: str = ""
    fail_reason: str = ""
    action: str = ""
    throttled: bool = False
    submitted_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    unknown_statuses: tuple[str, ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def result_url(self) -> str:
        for output in self.outputs:
            if output.kind == "video":
                return output.url
        return ""


# Raw statuses are matched upper-cased. The legacy digit codes can turn up in any position.
LEGACY_STATUSES: Mapping[str, Status] = MappingProxyType(
    {
        "0": Status.QUEUED,
        "1": Status.RUNNING,
        "2": Status.FAILED,  # refunded
        "3": Status.SUCCEEDED,
    }
)

# The gateway's own task status (``data.status``, or ``status`` in a bare or legacy record).
# ``UNKNOWN`` is a known value that says nothing: it maps to no canonical status.
WRAPPER_STATUSES: Mapping[str, Status | None] = MappingProxyType(
    {
        "NOT_START": Status.QUEUED,
        "SUBMITTED": Status.QUEUED,
        "QUEUED": Status.QUEUED,
        "IN_PROGRESS": Status.RUNNING,
        "SUCCESS": Status.SUCCEEDED,
        "FAILURE": Status.FAILED,
        "UNKNOWN": None,
        **LEGACY_STATUSES,
    }
)

# Runway's own task status (``data.data.status``).
INNER_STATUSES: Mapping[str, Status | None] = MappingProxyType(
    {
        "PENDING": Status.QUEUED,
        "THROTTLED": Status.QUEUED,
        "RUNNING": Status.RUNNING,
        "SUCCEEDED": Status.SUCCEEDED,
        "FAILED": Status.FAILED,
        "CANCELLED": Status.CANCELLED,
        **LEGACY_STATUSES,
    }
)

# Runway holds these tasks back because the account is over its concurrency limit.
THROTTLED_INNER_STATUSES = frozenset({"THROTTLED"})

# Legacy records and Runway-style objects name their media with these keys.
MEDIA_KEYS: tuple[tuple[str, str], ...] = (
    ("video_url", "video"),
    ("poster", "poster"),
    ("last_frame", "last_frame"),
)

SUCCESS_CODES = frozenset({"success", "200"})
TASK_NOT_EXIST = "task_not_exist"

STATUS_MAX_CHARS = 64
ACTION_MAX_CHARS = 64
TASK_ID_MAX_CHARS = 128
FAILURE_CODE_MAX_CHARS = 128
FAIL_REASON_MAX_CHARS = 2000
URL_MAX_CHARS = 2048
ERROR_MESSAGE_MAX_CHARS = 300
# A Runway task has one output; a long list is hostile or broken, not worth walking.
MAX_OUTPUT_ITEMS = 16

_FAILED_STATUSES = frozenset({Status.FAILED, Status.CANCELLED})
_URL_SCHEMES = frozenset({"http", "https"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Anything later than the last second of year 9999 cannot be a datetime: treat it as garbage.
_MAX_UNIX_SECONDS = 253_402_300_799
# ASCII only: float() would also accept "nan", "1_0" and non-ASCII digits.
_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})", re.ASCII)
_UNIX_SECONDS_RE = re.compile(r"\d{1,12}(?:\.\d{1,9})?", re.ASCII)
_ISO_MAX_CHARS = 64


def parse_feed(payload: Any) -> FeedSnapshot:
    """Turn one decoded ``POST /runway/feed`` response into a :class:`FeedSnapshot`.

    ``payload`` is whatever ``json.loads`` returned. Accepted shapes: the wrapped
    ``{"code": "success" | 200 | "200", "message": ..., "data": {...}}``, the bare task record
    ``{"task_id", "action", "status", ..., "data": {...Runway task...}}``, the legacy record
    (digit ``status``, ``video_url``/``poster``/``last_frame``, ``msg``, ``create_time``), and a
    bare Runway task object (``id``, ``status``, ``output``).

    The gateway status and Runway's inner status are both mapped; when they disagree the more
    advanced one wins, and between two different terminal statuses Runway's own wins. Raw
    statuses that are not recognised land in ``unknown_statuses``; with no recognised status at
    all, ``status`` is ``None`` (keep whatever the task had).

    Raises :class:`TaskNotVisibleError` for ``task_not_exist`` (poll again a little later) and
    :class:`InvalidResponseError` for everything else that is not a usable feed record: an error
    envelope, a non-success ``code``, a missing or invalid task id, no status field at all. No
    other exception escapes, whatever the input.
    """
    record = _unwrap(payload)
    inner = record.get("data")
    if not isinstance(inner, dict):
        inner = {}
    if "task_id" not in record and not inner and "id" in record:
        # A bare Runway task object: everything in it sits where the inner object would.
        record, inner = {}, record

    task_id = _find_task_id(record, inner, payload)

    provider_status = _raw_status(record.get("status"))
    provider_inner_status = _raw_status(inner.get("status"))
    if not provider_status and not provider_inner_status:
        raise InvalidResponseError(f"feed response for task {task_id} has no status")
    unknown: list[str] = []
    wrapper_status = _map_status(provider_status, WRAPPER_STATUSES, unknown)
    inner_status = _map_status(provider_inner_status, INNER_STATUSES, unknown)
    status = _merge_statuses(wrapper_status, inner_status)

    progress = _wrapper_progress(record.get("progress"))
    if progress is None:
        progress = _inner_progress(inner.get("progress"))
    if status == Status.SUCCEEDED:
        progress = 100

    failure_code = ""
    fail_reason = ""
    if status in _FAILED_STATUSES:
        failure_code = _text(inner.get("failureCode"), FAILURE_CODE_MAX_CHARS)
        fail_reason = (
            _text(record.get("fail_reason"), FAIL_REASON_MAX_CHARS)
            or _text(inner.get("failure"), FAIL_REASON_MAX_CHARS)
            or _text(record.get("msg"), FAIL_REASON_MAX_CHARS)
        )

    submitted_at = (
        _unix_datetime(record.get("submit_time"))
        or _iso_datetime(inner.get("createdAt"))
        or _unix_datetime(record.get("create_time"))
    )
    finished_at = _unix_datetime(record.get("finish_time"))
    if finished_at is None and status in TERMINAL_STATUSES:
        # A legacy record's last update is when it reached its final state.
        finished_at = _unix_datetime(record.get("update_time"))

    return FeedSnapshot(
        task_id=task_id,
        status=status,
        provider_status=provider_status,
        provider_inner_status=provider_inner_status,
        progress=progress,
        outputs=_find_outputs(record, inner, status),
        failure_code=failure_code,
        fail_reason=fail_reason,
        action=_text(record.get("action"), ACTION_MAX_CHARS),
        # A task that already runs or finished is no longer waiting on Runway's concurrency.
        throttled=(
            status == Status.QUEUED and provider_inner_status.upper() in THROTTLED_INNER_STATUSES
        ),
        submitted_at=submitted_at,
        started_at=_unix_datetime(record.get("start_time")),
        finished_at=finished_at,
        unknown_statuses=tuple(dict.fromkeys(unknown)),
        raw=payload,
    )


def _unwrap(payload: Any) -> dict[str, Any]:
    """Return the task record, raising for error bodies and non-success envelopes."""
    if not isinstance(payload, dict):
        raise InvalidResponseError(
            f"feed response is not a JSON object (got {_json_type(payload)})"
        )
    _raise_for_error_envelope(payload)
    if any(_is_task_not_exist(payload.get(key)) for key in ("code", "message", "msg")):
        raise _task_not_visible()
    if "code" not in payload and not _looks_wrapped(payload):
        return payload
    code = payload.get("code", 200)
    if not _is_success_code(code):
        detail = _text(payload.get("message"), ERROR_MESSAGE_MAX_CHARS) or _text(
            payload.get("msg"), ERROR_MESSAGE_MAX_CHARS
        )
        raise InvalidResponseError(
            f"feed response code is {_describe(code)}, not success"
            + (f": {loggable(detail)}" if detail else ""),
            code=_text(code, FAILURE_CODE_MAX_CHARS) or _describe(code),
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        raise InvalidResponseError(
            f"feed response has code success but its data is {_json_type(data)}, not an object"
        )
    return data


def _looks_wrapped(payload: dict[str, Any]) -> bool:
    # A wrapper that lost its "code": the record is one level down.
    data = payload.get("data")
    return (
        "task_id" not in payload
        and "status" not in payload
        and isinstance(data, dict)
        and "task_id" in data
    )


def _raise_for_error_envelope(payload: dict[str, Any]) -> None:
    error = payload.get("error")
    if isinstance(error, dict):
        message = _text(error.get("message"), ERROR_MESSAGE_MAX_CHARS)
        code = _text(error.get("code"), FAILURE_CODE_MAX_CHARS)
    elif isinstance(error, str) and error.strip():
        message, code = _text(error, ERROR_MESSAGE_MAX_CHARS), ""
    else:
        return
    # The gateway may also report an invisible task through the general envelope.
    if _is_task_not_exist(code) or _is_task_not_exist(message):
        raise _task_not_visible()
    # Gateway text in an error message ends up in logs and last_error: one line, bounded.
    raise InvalidResponseError(
        f"feed request failed: {loggable(message) or 'CometAPI gave no error message'}"
        + (f" (code {loggable(code)})" if code else ""),
        code=code,
    )


def _is_task_not_exist(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == TASK_NOT_EXIST


def _task_not_visible() -> TaskNotVisibleError:
    return TaskNotVisibleError(
        "the feed does not know this task (task_not_exist); a new task can stay invisible "
        "for a few seconds: poll again shortly",
        code=TASK_NOT_EXIST,
    )


def _is_success_code(code: Any) -> bool:
    if isinstance(code, bool):
        return False
    if isinstance(code, int):
        return code == 200
    return isinstance(code, str) and code.strip().lower() in SUCCESS_CODES


def _find_task_id(record: dict[str, Any], inner: dict[str, Any], payload: dict[str, Any]) -> str:
    for candidate in (record.get("task_id"), inner.get("id"), payload.get("task_id")):
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        task_id = candidate.strip()
        # The id ends up in URLs, logs and a database column: refuse anything odd.
        if len(task_id) > TASK_ID_MAX_CHARS or not task_id.isprintable():
            raise InvalidResponseError(
                f"feed response task id is not a printable string of at most "
                f"{TASK_ID_MAX_CHARS} characters"
            )
        return task_id
    raise InvalidResponseError("feed response has no task_id")


def _raw_status(value: Any) -> str:
    """The raw status as a string ("" when absent); other types become a ``<type>`` marker."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()[:STATUS_MAX_CHARS]
    # str() of an int with thousands of digits raises ValueError: only small ones are statuses.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**STATUS_MAX_CHARS:
        return str(value)[:STATUS_MAX_CHARS]
    return f"<{_json_type(value)}>"


def _map_status(raw: str, table: Mapping[str, Status | None], unknown: list[str]) -> Status | None:
    if not raw:
        return None
    key = raw.upper()
    if key in table:
        return table[key]
    unknown.append(raw)
    return None


def _merge_statuses(wrapper: Status | None, inner: Status | None) -> Status | None:
    if wrapper is None:
        return inner
    if inner is None or inner == wrapper:
        return wrapper
    if wrapper in TERMINAL_STATUSES and inner in TERMINAL_STATUSES:
        # Runway's own verdict is closer to the truth than the gateway's summary of it.
        return inner
    return wrapper if RANK[wrapper] > RANK[inner] else inner


def _wrapper_progress(value: Any) -> int | None:
    """The gateway reports a percent ("45%", 45); a non-integral value in [0, 1] is a fraction."""
    number = _progress_number(value)
    if number is None:
        return None
    amount, is_percent = number
    if (
        not is_percent
        and isinstance(amount, float)
        and 0 <= amount <= 1
        and not amount.is_integer()
    ):
        amount *= 100
    return _clamp_percent(amount)


def _inner_progress(value: Any) -> int | None:
    """Runway reports a fraction 0-1; only an explicit "45%" string is a percent."""
    number = _progress_number(value)
    if number is None:
        return None
    amount, is_percent = number
    return _clamp_percent(amount if is_percent else amount * 100)


def _progress_number(value: Any) -> tuple[int | float, bool] | None:
    """The number in a progress value and whether it was written as a percent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, False
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    is_percent = text.endswith("%")
    text = text.removesuffix("%").strip()
    if not _NUMBER_RE.fullmatch(text):
        return None
    number = float(text)
    return (int(number) if number.is_integer() else number), is_percent


def _clamp_percent(amount: int | float) -> int:
    if isinstance(amount, int):
        return max(0, min(100, amount))
    # Round away float noise (0.29 * 100 == 28.999...) before flooring, so 99.9% never shows 100.
    return math.floor(round(max(0.0, min(100.0, amount)), 6))


def _find_outputs(
    record: dict[str, Any], inner: dict[str, Any], status: Status | None
) -> tuple[Output, ...]:
    candidates: list[tuple[str, Any]] = [("video", record.get("result_url"))]
    output = inner.get("output")
    if isinstance(output, list):
        candidates.extend(("video", item) for item in output[:MAX_OUTPUT_ITEMS])
    else:
        candidates.append(("video", output))
    for source in (inner, record):
        candidates.extend((kind, source.get(key)) for key, kind in MEDIA_KEYS)
    if status == Status.SUCCEEDED:
        # The gateway stored the result URL in fail_reason for old rows.
        candidates.append(("video", record.get("fail_reason")))

    outputs: dict[str, Output] = {}
    for kind, value in candidates:
        url = clean_url(value)
        if url and url not in outputs:
            outputs[url] = Output(kind, url)
    return tuple(outputs.values())


def clean_url(value: Any) -> str:
    """The URL if it is an absolute http(s) URL safe to store and show, else ""."""
    if not isinstance(value, str):
        return ""
    url = value.strip()
    if not url or len(url) > URL_MAX_CHARS or " " in url or not url.isprintable():
        return ""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        return ""
    if parts.scheme.lower() not in _URL_SCHEMES or not parts.hostname:
        return ""
    return url


def _text(value: Any, max_chars: int) -> str:
    return value.strip()[:max_chars] if isinstance(value, str) else ""


def _unix_datetime(value: Any) -> dt.datetime | None:
    """Unix seconds (number or digit string) as an aware UTC datetime; 0 means unset."""
    seconds: int | float
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str) and _UNIX_SECONDS_RE.fullmatch(value.strip()):
        seconds = float(value)
    else:
        return None
    # Comparing first keeps huge ints away from float conversion (OverflowError).
    if not 0 < seconds <= _MAX_UNIX_SECONDS:
        return None
    return _EPOCH + dt.timedelta(seconds=seconds)


def _iso_datetime(value: Any) -> dt.datetime | None:
    """An ISO 8601 string (Runway's ``createdAt``) as an aware UTC datetime."""
    if not isinstance(value, str) or len(value) > _ISO_MAX_CHARS:
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(value: Any) -> str:
    """A short, safe rendering of an unexpected value for an error message."""
    if isinstance(value, str):
        return repr(value[:STATUS_MAX_CHARS])
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**20:
        return str(value)
    return _json_type(value)
