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
import time
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from . import __version__, cleaning
from .conf import conf
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
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(tz=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _snippet(raw: bytes) -> str:
    # A body that is not JSON still ends up in last_error: it must be storable text too.
    return cleaning.clean_text(raw[:BODY_SNIPPET].decode("utf-8", errors="replace"))


def _error_message(body: Any) -> tuple[str, str]:
    """(message, code) from any of CometAPI's error shapes, or empty strings."""
    if not isinstance(body, dict):
        return "", ""
    envelope = body.get("error")
    if isinstance(envelope, dict):
        return str(envelope.get("message") or "")[:500], str(envelope.get("code") or "")[:64]
    message = body.get("msg") or body.get("message") or ""
    code = body.get("code")
    return str(message)[:500], ("" if code is None else str(code)[:64])


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
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": user_agent(),
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

    def create(self, route: str, payload: dict[str, Any]) -> str:
        """POST a create route (``generate``, ``video2video``, ``act_one``); return the task id.

        Raises :class:`RequestRejectedError` when the API refuses the task, and
        :class:`TransientAPIError` when the outcome is unknown (the caller must not retry blindly:
        the task may exist and be billed). An accepted task whose id cannot be kept as sent (a
        NUL, not printable, too long) raises :class:`UnusableTaskIdError`.
        """
        try:
            path = CREATE_ROUTES[route]
        except KeyError:
            raise ValueError(f"Unknown create route {route!r}") from None
        answer = self._post(path, payload)
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

    def feed(self, task_id: str) -> Any:
        """POST ``/runway/feed`` for one task and return the decoded JSON body.

        A ``task_not_exist`` answer (HTTP 400 or 200) raises :class:`TaskNotVisibleError`.
        """
        answer = self._post(FEED_PATH, {"task_id": task_id})
        if answer.notes:
            logger.warning(
                "CometAPI's answer about task %s was cleaned before use: %s",
                task_id,
                "; ".join(map(str, answer.notes)),
            )
        body = answer.value
        if isinstance(body, dict) and body.get("code") == TASK_NOT_EXIST:
            raise TaskNotVisibleError(
                f"CometAPI does not know task {task_id} (yet)", status_code=200, code=TASK_NOT_EXIST
            )
        return body

    def _post(self, path: str, payload: dict[str, Any]) -> cleaning.Cleaned:
        url = self.base_url + path
        started = time.monotonic()
        try:
            response = self.session.post(
                url, json=payload, timeout=self.timeout, allow_redirects=False, stream=True
            )
        except requests.Timeout as exc:
            raise TransientAPIError(f"CometAPI timed out on {path}") from exc
        except requests.RequestException as exc:
            raise TransientAPIError(
                f"CometAPI could not be reached on {path}: {type(exc).__name__}"
            ) from exc
        try:
            raw = self._read_capped(response, path, started)
        finally:
            response.close()
        return self._decode(response, raw, path)

    def _read_capped(self, response: requests.Response, path: str, started: float) -> bytes:
        cap = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise InvalidResponseError(
                f"CometAPI's answer on {path} is larger than {cap} bytes",
                status_code=response.status_code,
            )
        # requests' read timeout bounds each read, not the whole answer: a server trickling a
        # byte now and then could hold a worker past its lease. The whole request gets the sum
        # of the timeouts ("one request" for the checks): each read may wait only what is left.
        read_timeout = self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout
        allowed = request_seconds(self.timeout)
        deadline = started + allowed
        too_slow = f"CometAPI's answer on {path} took longer than {allowed:g} s"
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientAPIError(too_slow)
            if sock is not None:
                sock.settimeout(min(read_timeout, remaining))
            try:
                chunk = response.raw.read1(64 * 1024, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise TransientAPIError(too_slow) from exc
                raise TransientAPIError(
                    f"CometAPI's answer on {path} was cut off: {type(exc).__name__}"
                ) from exc
            if not chunk:
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
