"""How fake tasks behave (:class:`TaskScript`) and what goes wrong on the wire (:class:`Fault`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

OUTCOMES = ("succeeded", "failed", "cancelled", "never")
PROGRESS_STYLES = ("fine", "coarse")
SHAPES = ("wrapped", "bare", "legacy")
OUTPUT_LOCATIONS = ("result_url", "inner_output", "legacy_video_url", "video_url", "fail_reason")
# COMETAPI.md lists these gateway statuses for a task that has not started; only QUEUED is
# confirmed, so a client must cope with any of them.
QUEUED_WRAPPER_STATUSES = ("QUEUED", "NOT_START", "SUBMITTED", "UNKNOWN")

FAULT_KINDS = ("status", "slow", "body", "redirect", "reset", "huge", "task_not_exist")

_DURATIONS = (
    "invisible_for",
    "queued_for",
    "throttled_for",
    "run_for",
    "output_delay",
    "wrapper_lag",
    "callback_delay",
)


def _require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TaskScript.{name} must be one of {', '.join(choices)}; got {value!r}.")


@dataclass(frozen=True)
class TaskScript:
    """How one fake task behaves, in seconds measured on the server's clock from its creation.

    The phases follow one another: the task is invisible (the feed answers ``task_not_exist``)
    for ``invisible_for`` seconds, then queued (wrapper ``QUEUED``, Runway ``PENDING``) for
    ``queued_for``, then throttled (wrapper ``QUEUED``, Runway ``THROTTLED``) for
    ``throttled_for``, then running (wrapper ``IN_PROGRESS``, Runway ``RUNNING``) for
    ``run_for``, and then it ends with ``outcome``. Any duration may be ``math.inf`` (a task that
    stays queued or throttled for ever). ``outcome="never"`` keeps the task running for ever,
    its progress stopping at 99%.

    ``shape`` picks the feed body: ``"wrapped"`` (the documented ``{code, message, data}``),
    ``"bare"`` (the inner ``data`` object alone) or ``"legacy"`` (wrapped, but statuses are the
    digit strings ``"0"``..``"3"`` and ``data.data`` is a legacy record carrying ``video_url``,
    ``poster``, ``last_frame`` and ``msg``; ``output_location`` does not apply to it).

    ``output_location`` picks the single place the video URL appears on success, so a parser's
    every fallback can be exercised: ``"result_url"`` (``data.result_url``), ``"inner_output"``
    (``data.data.output``), ``"legacy_video_url"`` (``data.data.video_url``, ``poster`` and
    ``last_frame``), ``"video_url"`` (``data.video_url``) or ``"fail_reason"`` (the gateway quirk
    of a URL in ``data.fail_reason``).

    Disagreements COMETAPI.md warns about can be scripted too: ``output_delay`` keeps the output
    URLs out of a succeeded task's payload for that long after it finished, and ``wrapper_lag``
    makes the wrapper status trail the inner Runway status by that many seconds.
    ``queued_wrapper_status`` is the wrapper status while queued or throttled.
    ``callback`` says whether the server calls back ``callback_url`` when the task ends (only
    when the server was started with ``callbacks=True``; COMETAPI.md: failures may not be called
    back), and ``callback_delay`` how long after the end the callback is sent at the earliest
    (its timing is not documented).
    """

    outcome: str = "succeeded"
    invisible_for: float = 0.0
    queued_for: float = 2.0
    throttled_for: float = 0.0
    run_for: float = 10.0
    progress_style: str = "fine"
    failure_code: str = "SAFETY.INPUT.TEXT"
    failure: str = "The prompt was flagged by content moderation."
    shape: str = "wrapped"
    output_location: str = "result_url"
    action: str = "IMAGE_TO_VIDEO"
    queued_wrapper_status: str = "QUEUED"
    output_delay: float = 0.0
    wrapper_lag: float = 0.0
    callback: bool = True
    callback_delay: float = 0.0

    def __post_init__(self) -> None:
        _require_choice("outcome", self.outcome, OUTCOMES)
        _require_choice("progress_style", self.progress_style, PROGRESS_STYLES)
        _require_choice("shape", self.shape, SHAPES)
        _require_choice("output_location", self.output_location, OUTPUT_LOCATIONS)
        _require_choice(
            "queued_wrapper_status", self.queued_wrapper_status, QUEUED_WRAPPER_STATUSES
        )
        for name in _DURATIONS:
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"TaskScript.{name} must be a duration >= 0; got {value!r}.")


_HTML_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)
_MALFORMED_JSON = '{"code": "success", "message": "", "data": {"task_id": "'
_REDIRECT_LOCATION = "https://example.invalid/elsewhere"


@dataclass(frozen=True)
class Fault:
    """A fault injected into responses (see :meth:`FakeCometAPI.inject`).

    ``kind`` is one of:

    - ``"status"``: answer HTTP ``status`` with ``body`` (default: the gateway's JSON error
      envelope for 4xx and 500, an nginx HTML page for 502/503/504/524) and ``headers``;
    - ``"slow"``: sleep ``delay`` seconds, then answer normally;
    - ``"body"``: HTTP 200 with the raw ``body`` text (malformed JSON, an HTML page ...); a
      lone surrogate in it is sent as its UTF-8 bytes, invalid as they are;
    - ``"redirect"``: HTTP 301 to ``https://example.invalid/elsewhere`` (or
      ``headers["Location"]``);
    - ``"reset"``: send the status line, headers promising a longer body, part of it, then
      close the socket;
    - ``"huge"``: HTTP 200 with a chunked body of ``size`` bytes and no Content-Length;
    - ``"task_not_exist"``: the gateway's ``task_not_exist`` body, with HTTP 400 (or 200 when
      ``status`` is 200: COMETAPI.md allows both).

    The class methods build the common ones.
    """

    kind: str
    status: int = 500
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    size: int = 0

    KINDS: ClassVar[tuple[str, ...]] = FAULT_KINDS

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"Fault.kind must be one of {', '.join(FAULT_KINDS)}; got {self.kind!r}."
            )
        if not 100 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP status code; got {self.status!r}.")
        if self.delay < 0 or self.size < 0:
            raise ValueError("Fault.delay and Fault.size must not be negative.")

    def __repr__(self) -> str:
        # Only the fields that differ from their defaults, so failing tests read well.
        parts = [f"{self.kind!r}"]
        for spec in fields(self)[1:]:
            value = getattr(self, spec.name)
            default = spec.default_factory() if callable(spec.default_factory) else spec.default
            if value != default:
                parts.append(f"{spec.name}={value!r}")
        return f"Fault({', '.join(parts)})"

    @classmethod
    def rate_limited(cls, retry_after: str | None = None) -> Fault:
        """HTTP 429 with the error envelope, and ``Retry-After`` when given."""
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        return cls("status", status=429, headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """An HTTP 5xx: the JSON envelope for 500, a proxy's HTML page for 502/503/504/524."""
        return cls("status", status=status)

    @classmethod
    def unauthorized(cls) -> Fault:
        """HTTP 401 with the error envelope (``Invalid token``)."""
        return cls("status", status=401)

    @classmethod
    def quota(cls) -> Fault:
        """HTTP 403 with the error envelope, code ``insufficient_user_quota``."""
        return cls("status", status=403)

    @classmethod
    def html(cls) -> Fault:
        """HTTP 200 whose body is an HTML page instead of JSON."""
        return cls("body", body=_HTML_ERROR_PAGE, headers={"Content-Type": "text/html"})

    @classmethod
    def malformed_json(cls) -> Fault:
        """HTTP 200, ``Content-Type: application/json``, and a truncated JSON body."""
        return cls("body", body=_MALFORMED_JSON, headers={"Content-Type": "application/json"})

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """Answer normally, but only after ``delay`` seconds (for client timeouts)."""
        return cls("slow", delay=delay)

    @classmethod
    def redirect(cls) -> Fault:
        """HTTP 301 to ``https://example.invalid/elsewhere``: a client must not follow it."""
        return cls("redirect", status=301)

    @classmethod
    def reset(cls) -> Fault:
        """Headers and part of the body, then the connection is closed."""
        return cls("reset")

    @classmethod
    def huge(cls, size: int) -> Fault:
        """HTTP 200 with a chunked body of ``size`` bytes and no Content-Length."""
        return cls("huge", size=size)

    @classmethod
    def task_not_exist(cls, *, http_status: int = 400) -> Fault:
        """The ``task_not_exist`` body, with HTTP 400 (the gateway's) or 200."""
        return cls("task_not_exist", status=http_status)


def default_error_message(status: int) -> tuple[str, str]:
    """The (message, code) of the gateway's error envelope for an HTTP status."""
    return _ERROR_MESSAGES.get(status, ("upstream error", ""))


_ERROR_MESSAGES: dict[int, tuple[str, str]] = {
    400: ("invalid request", "invalid_request"),
    401: ("Invalid token", ""),
    403: ("user quota is not enough", "insufficient_user_quota"),
    404: ("not found", ""),
    429: ("Rate limit reached, please try again later", "rate_limit_exceeded"),
    500: ("internal server error", ""),
}

PROXY_ERROR_STATUSES = frozenset({502, 503, 504, 524})

_PROXY_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
    524: "A timeout occurred",
}


def proxy_error_page(status: int) -> str:
    """The HTML page a reverse proxy sends in place of the API's JSON."""
    title = f"{status} {_PROXY_REASONS.get(status, 'Error')}"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
        f"<body><center><h1>{title}</h1></center><hr><center>nginx</center></body></html>\n"
    )


def error_envelope(message: str, *, code: str, request_id: str) -> str:
    """The gateway's general error body."""
    return json.dumps(
        {
            "error": {
                "message": f"{message} (request id: {request_id})",
                "type": "comet_api_error",
                "param": "",
                "code": code,
            }
        }
    )
