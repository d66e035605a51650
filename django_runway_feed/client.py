"""A small CometAPI client over one pooled ``requests.Session``.

It knows the wire (headers, timeouts, size caps, error classification) and nothing about models.
Every failure comes out as a :class:`~django_runway_feed.exceptions.APIError` subclass, chained
to the transport error that caused it. The API key lives only in the session's headers: it is
never part of a repr, a log line or an exception message.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import re
import time
import zlib
from typing import Any

import requests
import urllib3.exceptions

from . import __version__, cleaning
from .cleaning import loggable
from .conf import conf
from .deadlines import Deadline, DeadlineAdapter, deadline
from .exceptions import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidResponseError,
    RateLimitedError,
    RequestRejectedError,
    TaskNotVisibleError,
    TransientAPIError,
    UnusableTaskIdError,
)

logger = logging.getLogger(__name__)

CREATE_ROUTES = {
    "generate": "/runway/pro/generate",
    "video2video": "/runway/pro/video2video",
    "act_one": "/runway/pro/act_one",
}
FEED_PATH = "/runway/feed"
TASK_NOT_EXIST = "task_not_exist"
TASK_ID_MAX_CHARS = 128
# How much of a bad body is kept on the exception (and so in ``last_error``) for inspection.
BODY_SNIPPET = 2000
TRANSIENT_STATUSES = frozenset({408, 425, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# A Retry-After longer than this is taken as this: a hostile or broken header must not park a
# task (or the whole poller) for days, nor overflow a datetime.
MAX_RETRY_AFTER_SECONDS = 3600.0
# How much of the cleaning notes one log record carries.
LOG_NOTES_CHARS = 2000
# Only ASCII digits make a Content-Length ("²" passes str.isdigit() but not int()).
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,20}")
# We ask for identity. A server that compresses anyway may use one of these, decoded here under
# the same size cap as a plain body; anything else (br, zstd, a chain such as "gzip, gzip") is
# refused unread. zlib's wbits: 16 + 15 reads gzip, 15 zlib-wrapped deflate.
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def user_agent() -> str:
    return f"django-runway-feed/{__version__} python-requests/{requests.__version__}"


def request_seconds(timeout: float | tuple[float, float] | None = None) -> float:
    """The longest one request may take: the sum of its ``(connect, read)`` timeouts.

    A hard bound: the answer is cut off once it is reached (``REQUEST_TIMEOUT`` by default).
    """
    timeout = conf.REQUEST_TIMEOUT if timeout is None else timeout
    return sum(timeout) if isinstance(timeout, tuple) else 2 * timeout


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()[:100]
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        now = now or dt.datetime.now(tz=dt.UTC)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    # "inf", "1e400" or a date in year 9999: at most MAX_RETRY_AFTER_SECONDS.
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _snippet(raw: bytes) -> str:
    # A body that is not JSON still ends up in last_error: it must be storable text too.
    return cleaning.clean_text(raw[:BODY_SNIPPET].decode("utf-8", errors="replace"))


def _error_message(body: Any) -> tuple[str, str]:
    """(message, code) from any of CometAPI's error shapes, or empty strings."""
    if not isinstance(body, dict):
        return "", ""
    envelope = body.get("error")
    if isinstance(envelope, dict):
        return loggable(envelope.get("message") or "", 500), loggable(envelope.get("code"), 64)
    message = body.get("msg") or body.get("message") or ""
    code = body.get("code")
    return loggable(message, 500), ("" if code is None else loggable(code, 64))


class CometAPIClient:
    """Talks to CometAPI's Runway routes.

    Arguments default to the ``RUNWAY_FEED`` settings, read when the client is built. One client
    holds one connection pool sized for ``pool_size`` concurrent requests; reuse it for a whole
    poll run and :meth:`close` it afterwards (or use it as a context manager).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        runway_version: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        max_response_bytes: int | None = None,
        pool_size: int | None = None,
    ) -> None:
        api_key = api_key or conf.API_KEY
        if not api_key:
            raise ConfigurationError(
                "No CometAPI key configured: set RUNWAY_FEED['API_KEY'] in your settings."
            )
        self.base_url = (base_url or conf.BASE_URL).rstrip("/")
        self.timeout = timeout if timeout is not None else conf.REQUEST_TIMEOUT
        self.max_response_bytes = max_response_bytes or conf.MAX_RESPONSE_BYTES
        pool_size = pool_size or conf.CONCURRENCY
        self.session = requests.Session()
        # Retries are ours to decide (a retried create could bill twice); never urllib3's.
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": user_agent(),
                # Compression buys nothing on answers of a few KB and opens the door to bombs.
                "Accept-Encoding": "identity",
                "X-Runway-Version": runway_version or conf.RUNWAY_VERSION,
            }
        )

    def __repr__(self) -> str:
        return f"<CometAPIClient {self.base_url}>"

    def __enter__(self) -> CometAPIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def create(self, route: str, payload: dict[str, Any], *, until: float | None = None) -> str:
        """POST a create route (``generate``, ``video2video``, ``act_one``); return the task id.

        Raises :class:`RequestRejectedError` when the API refuses the task, and
        :class:`TransientAPIError` when the outcome is unknown (the caller must not retry blindly:
        the task may exist and be billed). An accepted task whose id cannot be kept as sent (a
        NUL, not printable, too long) raises :class:`UnusableTaskIdError`. ``until`` (a
        ``time.monotonic()`` value) ends the request earlier than its own bound,
        :func:`request_seconds`.
        """
        try:
            path = CREATE_ROUTES[route]
        except KeyError:
            raise ValueError(f"Unknown create route {route!r}") from None
        answer = self._post(path, payload, until=until)
        body = answer.value
        if isinstance(body, dict):
            data = body.get("data")
            task_id = data.get("task_id") if isinstance(data, dict) else None
            altered = answer.note_at("data.task_id")
            accepted = str(body.get("code")) == "200"
            if accepted and isinstance(task_id, str) and (task_id.strip() or altered):
                return _usable_task_id(task_id, altered, body)
            message, code = _error_message(body)
            if message or (code and code != "200"):
                raise RequestRejectedError(
                    f"CometAPI refused the task: {message or code}",
                    status_code=200,
                    code=message if message == "callback_url_empty" else code,
                    body=_snippet(json.dumps(body).encode()),
                )
        raise InvalidResponseError(
            "CometAPI's create answer has no task id",
            status_code=200,
            body=_snippet(json.dumps(body).encode()),
        )

    def feed(self, task_id: str, *, until: float | None = None) -> Any:
        """POST ``/runway/feed`` for one task and return the decoded JSON body.

        A ``task_not_exist`` answer (HTTP 400 or 200) raises :class:`TaskNotVisibleError`.
        ``until`` (a ``time.monotonic()`` value, such as the end of the task's lease) ends the
        request earlier than its own bound, :func:`request_seconds`.
        """
        answer = self._post(FEED_PATH, {"task_id": task_id}, until=until)
        if answer.notes:
            # However many notes and however long their paths, one bounded line.
            logger.warning(
                "CometAPI's answer about task %s was cleaned before use: %s",
                task_id,
                loggable("; ".join(map(str, answer.notes)), LOG_NOTES_CHARS),
            )
        body = answer.value
        if isinstance(body, dict) and body.get("code") == TASK_NOT_EXIST:
            raise TaskNotVisibleError(
                f"CometAPI does not know task {task_id} (yet)", status_code=200, code=TASK_NOT_EXIST
            )
        return body

    def _post(
        self, path: str, payload: dict[str, Any], *, until: float | None = None
    ) -> cleaning.Cleaned:
        url = self.base_url + path
        # requests' read timeout bounds each read, not the whole answer: a server trickling a
        # byte now and then, in the headers or the body, could hold a worker past its lease.
        # The whole request gets the sum of the timeouts ("one request" for the checks), or
        # less when the caller's own deadline (a lease) ends sooner; the watchdog of
        # ``deadline`` cuts the connection off then, wherever the answer has got to.
        allowed = request_seconds(self.timeout)
        too_slow = f"CometAPI's answer on {path} took longer than {allowed:g} s"
        if until is not None and until - time.monotonic() < allowed:
            allowed = until - time.monotonic()
            too_slow = f"CometAPI's answer on {path} did not come before the task's lease ended"
        if allowed <= 0:
            raise TransientAPIError(too_slow)
        with deadline(allowed) as bound:
            try:
                response = self.session.post(
                    url, json=payload, timeout=self.timeout, allow_redirects=False, stream=True
                )
            except requests.Timeout as exc:
                if bound.expired:
                    raise TransientAPIError(too_slow) from exc
                raise TransientAPIError(f"CometAPI timed out on {path}") from exc
            except requests.RequestException as exc:
                if bound.expired:
                    raise TransientAPIError(too_slow) from exc
                raise TransientAPIError(
                    f"CometAPI could not be reached on {path}: {type(exc).__name__}"
                ) from exc
            try:
                raw = self._read_capped(response, path, bound, too_slow)
            finally:
                # Before the connection goes back to the pool, where another request may
                # take it: this deadline must not cut that one.
                bound.close()
                response.close()
            if bound.expired:
                # The cut may have left what looks like a complete (empty or short) answer.
                raise TransientAPIError(too_slow)
        return self._decode(response, raw, path)

    def _read_capped(
        self, response: requests.Response, path: str, bound: Deadline, too_slow: str
    ) -> bytes:
        cap = self.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None:
            if not _CONTENT_LENGTH_RE.fullmatch(declared.strip()):
                raise InvalidResponseError(
                    f"CometAPI's answer on {path} has a malformed Content-Length "
                    f"{cleaning.escaped(declared, limit=40)}",
                    status_code=response.status_code,
                )
            if int(declared) > cap:
                raise InvalidResponseError(
                    f"CometAPI's answer on {path} is larger than {cap} bytes",
                    status_code=response.status_code,
                )
        decoder = _decoder_for(response.headers.get("Content-Encoding"), path, response)
        chunks: list[bytes] = []
        size = 0
        while True:
            if bound.passed():
                raise TransientAPIError(too_slow)
            try:
                # urllib3 never decodes: its decoders have no output bound before 2.6, and ours
                # below stops at the cap whatever the ratio.
                chunk = response.raw.read1(64 * 1024, decode_content=False)
                if decoder is not None:
                    # Never more than what is left under the cap, plus one byte to notice passing
                    # it (then the input left over is never needed: the answer is refused).
                    chunk = decoder.decompress(chunk, cap - size + 1) if chunk else decoder.flush()
            except zlib.error as exc:
                raise InvalidResponseError(
                    f"CometAPI's compressed answer on {path} could not be decoded",
                    status_code=response.status_code,
                ) from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if bound.passed():
                    raise TransientAPIError(too_slow) from exc
                raise TransientAPIError(
                    f"CometAPI's answer on {path} was cut off: {type(exc).__name__}"
                ) from exc
            except Exception as exc:
                # Whatever else the transport raises while the answer is read, the request was
                # sent: for a create the outcome is unknown, never a crash.
                raise TransientAPIError(
                    f"CometAPI's answer on {path} could not be read: {type(exc).__name__}"
                ) from exc
            if not chunk:
                if decoder is not None and not decoder.eof:
                    raise InvalidResponseError(
                        f"CometAPI's compressed answer on {path} ends before its end",
                        status_code=response.status_code,
                    )
                return b"".join(chunks)
            size += len(chunk)
            if size > cap:
                raise InvalidResponseError(
                    f"CometAPI's answer on {path} is larger than {cap} bytes",
                    status_code=response.status_code,
                    body=_snippet(b"".join(chunks)),
                )
            chunks.append(chunk)

    def _decode(self, response: requests.Response, raw: bytes, path: str) -> cleaning.Cleaned:
        status = response.status_code
        # The one place a body becomes data: cleaned here, so error messages built from it,
        # last_response and event payloads are storable whatever the server sent.
        try:
            answer = cleaning.loads(raw) if raw else cleaning.Cleaned(None)
            decoded = True
        except (ValueError, RecursionError):
            answer, decoded = cleaning.Cleaned(None), False
        body = answer.value

        if 300 <= status < 400:
            raise InvalidResponseError(
                f"CometAPI redirected {path} (HTTP {status}); redirects are not followed. "
                "Check RUNWAY_FEED['BASE_URL'].",
                status_code=status,
                body=_snippet(raw),
            )
        message, code = _error_message(body)
        detail = f": {message}" if message else ""
        common: dict[str, Any] = {"status_code": status, "code": code, "body": _snippet(raw)}
        if status == 401:
            raise AuthenticationError(
                f"CometAPI refused the API key (HTTP 401){detail}. Check RUNWAY_FEED['API_KEY'].",
                **common,
            )
        if status == 403:
            raise ForbiddenError(
                f"CometAPI refused access (HTTP 403){detail}. The key may be blocked or out of "
                "quota.",
                **common,
            )
        if status == 429:
            raise RateLimitedError(
                f"CometAPI rate limited the request (HTTP 429){detail}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                **common,
            )
        if status in TRANSIENT_STATUSES or status >= 500:
            raise TransientAPIError(f"CometAPI failed on {path} (HTTP {status}){detail}", **common)
        if TASK_NOT_EXIST in (code, message):
            raise TaskNotVisibleError(f"CometAPI does not know this task (yet){detail}", **common)
        if 400 <= status < 500:
            raise RequestRejectedError(
                f"CometAPI refused the request (HTTP {status}){detail}", **common
            )
        if status != 200:
            raise InvalidResponseError(
                f"Unexpected HTTP {status} from CometAPI on {path}", **common
            )
        if not decoded:
            raise InvalidResponseError(
                f"CometAPI's answer on {path} is not JSON", status_code=status, body=_snippet(raw)
            )
        return answer


def _decoder_for(
    encoding: str | None, path: str, response: requests.Response
) -> Any:  # zlib's decompress object has no public type name
    """A bounded decoder for one gzip or deflate coding, None for identity; else refused."""
    codings = [part.strip().lower() for part in (encoding or "").split(",") if part.strip()]
    codings = [coding for coding in codings if coding != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _DECODERS:
        return zlib.decompressobj(_DECODERS[codings[0]])
    raise InvalidResponseError(
        f"CometAPI's answer on {path} has a Content-Encoding this client does not accept "
        f"({cleaning.escaped(encoding or '', limit=60)}; it asks for identity)",
        status_code=response.status_code,
    )


def _usable_task_id(task_id: str, note: cleaning.Note | None, body: Any) -> str:
    """The id of an accepted task, or :class:`UnusableTaskIdError` if it cannot be kept as sent.

    The provider has accepted (and billed) the task by now, so the error carries what an
    operator needs to reconcile it: the id as sent, escaped, and the cleaned id when that is
    still a usable one.
    """
    cleaned = task_id.strip()
    usable = 0 < len(cleaned) <= TASK_ID_MAX_CHARS and cleaned.isprintable()
    if note is None and usable:
        return cleaned
    raw = note.original if note is not None else cleaning.escaped(task_id)
    if usable:
        message = (
            f"CometAPI accepted the task, but its id {raw} holds characters that cannot be "
            f"stored; it is followed as {cleaned!r}. Check it in CometAPI's dashboard."
        )
    else:
        message = (
            f"CometAPI accepted the task, but its id {raw} is not a printable id of at most "
            f"{TASK_ID_MAX_CHARS} characters, so it cannot be followed: reconcile it by hand in "
            "CometAPI's dashboard (it may be billed)."
        )
    raise UnusableTaskIdError(
        message,
        status_code=200,
        body=_snippet(json.dumps(body).encode()),
        task_id=cleaned if usable else "",
        raw_task_id=raw,
    )


__all__ = ["CREATE_ROUTES", "APIError", "CometAPIClient", "parse_retry_after", "request_seconds"]
