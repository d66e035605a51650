"""One error tree for the whole app, rooted at :class:`RunwayFeedError`.

Each class also inherits the builtin a caller would naturally catch (``ValueError`` for bad
data, ``ConnectionError`` for transport trouble, ``PermissionError`` for a refused key), so code
that does not know this library still handles its errors sensibly.
"""

from __future__ import annotations


class RunwayFeedError(Exception):
    """Base class of every error raised by django-runway-feed."""


class ConfigurationError(RunwayFeedError, ValueError):
    """The RUNWAY_FEED settings (or the API's answer to them) cannot work."""


class APIError(RunwayFeedError):
    """CometAPI answered, or failed to answer, in a way that stops this call.

    ``status_code`` is the HTTP status when there was a response, ``code`` the provider's error
    code when the body named one, ``body`` a truncated copy of the response kept for inspection.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str = "",
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.body = body

    def __str__(self) -> str:
        return self.message


class AuthenticationError(APIError, PermissionError):
    """HTTP 401: the API key is missing or invalid. Retrying will not help."""


class ForbiddenError(APIError, PermissionError):
    """HTTP 403: the key is blocked or out of quota (``insufficient_user_quota``)."""


class TransientAPIError(APIError, ConnectionError):
    """A failure worth retrying later: 5xx, 524, a timeout or a broken connection."""


class RateLimitedError(TransientAPIError):
    """HTTP 429. ``retry_after`` is the delay in seconds the server asked for, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RequestRejectedError(APIError, ValueError):
    """The API refused the request itself (HTTP 400, or a create answered with a non-200 code)."""


class TaskNotVisibleError(APIError, LookupError):
    """``task_not_exist``: the task id is unknown to the feed, possibly only for now."""


class InvalidResponseError(APIError, ValueError):
    """The response cannot be understood: not JSON, HTML, a redirect, the wrong shape, too big."""


class UnusableTaskIdError(InvalidResponseError):
    """A create was accepted, but the task id in the answer cannot be kept as sent.

    The provider may have billed the task. ``task_id`` is the cleaned id when it is still a
    usable one (NUL characters or lone surrogates removed), else ``""``; ``raw_task_id`` is the
    id as sent, escaped for display, so an operator can find the task at the provider.
    """

    def __init__(
        self, message: str, *, task_id: str = "", raw_task_id: str = "", **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.task_id = task_id
        self.raw_task_id = raw_task_id


class UnstorableAnswerError(RunwayFeedError):
    """The database refused to store a poll's result for one task (recorded as its error)."""


class DownloadUnavailable(RunwayFeedError, ValueError):
    """A result download cannot be queued for this task; the message says why."""


class DownloadError(RunwayFeedError):
    """One attempt to download a result failed. ``retryable`` says whether to try again later."""

    retryable = True

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class DownloadRefused(DownloadError, PermissionError):
    """The URL, an address it resolves to, or the response was refused by a safety rule."""

    retryable = False


class DownloadTooLarge(DownloadRefused):
    """The body went past ``MAX_DOWNLOAD_BYTES``."""


class DownloadExpired(DownloadError, LookupError):
    """The host answered 403, 404 or 410: the URL has probably expired.

    The feed is asked for fresh URLs and the attempt is tried again with them.
    """
