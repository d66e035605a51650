"""Every read of an HTTP answer has a deadline, headers included (issue 13).

Servers here trickle one byte every ``pause`` seconds, well within any read timeout, so only a
deadline for the whole exchange stops the client. Bounds are generous: "ends near its
deadline" means well before the trickle would have ended on its own.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from django_runway_feed.client import CometAPIClient
from django_runway_feed.exceptions import DownloadError, TransientAPIError
from django_runway_feed.models import RunwayTask
from django_runway_feed.polling import Poller
from django_runway_feed.safe_fetch import SafeDownloader

# Trickled at 0.1 s a byte, these take far longer than any deadline below.
FEED_ANSWER = json.dumps(
    {"code": "success", "data": {"task_id": "slow", "status": "IN_PROGRESS"}, "pad": "x" * 400}
).encode()
VIDEO = b"\x00\x00\x00\x18ftypisom" + b"v" * 400


class TricklingServer:
    """Answers every request one byte at a time: the headers (``part="headers"``) or the body.

    ``finished`` is set when a connection ends; ``sent`` counts the bytes that went out.
    """

    def __init__(
        self, *, part: str, content_type: str, body: bytes, pause: float = 0.1, length: bool = True
    ) -> None:
        self.part, self.pause, self.body = part, pause, body
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        head += f"Content-Length: {len(body)}\r\n" if length else "Connection: close\r\n"
        self.head = (head + "\r\n").encode()
        self.sent = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _address = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            self.requests += 1
            if self.part == "body":
                conn.sendall(self.head)
                trickled = self.body
            else:
                trickled = self.head + self.body
            try:
                for index in range(len(trickled)):
                    conn.sendall(trickled[index : index + 1])
                    self.sent += 1
                    time.sleep(self.pause)
            except OSError:
                pass  # the client hung up, as it should

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def trickling() -> Iterator[Callable[..., TricklingServer]]:
    servers: list[TricklingServer] = []

    def make(**kwargs: object) -> TricklingServer:
        server = TricklingServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# -- the API client -------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["headers", "body"])
def test_feed_request_trickled_ends_at_its_hard_limit(trickling, part):
    server = trickling(part=part, content_type="application/json", body=FEED_ANSWER)
    client = CometAPIClient(api_key="k", base_url=server.url, timeout=(1, 0.5))

    took, error = timed(lambda: client.feed("slow"))
    client.close()

    assert isinstance(error, TransientAPIError)
    assert str(error) == "CometAPI's answer on /runway/feed took longer than 1.5 s"
    # The trickle alone lasts over 40 s; the bound is 1.5 s.
    assert 1.4 <= took < 6


@pytest.mark.parametrize("part", ["headers", "body"])
def test_create_request_trickled_ends_at_its_hard_limit(trickling, part):
    server = trickling(part=part, content_type="application/json", body=FEED_ANSWER)
    client = CometAPIClient(api_key="k", base_url=server.url, timeout=(1, 0.5))

    took, error = timed(lambda: client.create("generate", {"prompt": "a cat"}))
    client.close()

    assert isinstance(error, TransientAPIError)
    assert "took longer than 1.5 s" in str(error)
    assert took < 6


def test_feed_request_until_ends_before_its_hard_limit(trickling):
    server = trickling(part="headers", content_type="application/json", body=FEED_ANSWER)
    client = CometAPIClient(api_key="k", base_url=server.url, timeout=(5, 30))

    took, error = timed(lambda: client.feed("slow", until=time.monotonic() + 1))
    client.close()

    assert isinstance(error, TransientAPIError)
    assert str(error) == (
        "CometAPI's answer on /runway/feed did not come before the task's lease ended"
    )
    assert took < 6


def test_client_connection_after_a_cut_serves_the_next_request(api):
    # A cut connection goes back to the pool shut down; the next request must open a fresh one.
    client = CometAPIClient(base_url=api.url, timeout=(1, 1))
    task_id = api.add_task()
    try:
        from django_runway_feed.testing import Fault

        api.inject(Fault.slow(3.0), task_id=task_id)
        _took, error = timed(lambda: client.feed(task_id))
        assert isinstance(error, TransientAPIError)
        assert client.feed(task_id)["data"]["task_id"] == task_id
    finally:
        client.close()


# -- the poller: no request outlives its lease ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_poll_of_trickled_headers_ends_within_the_lease(trickling, settings):
    server = trickling(part="headers", content_type="application/json", body=FEED_ANSWER)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    task = RunwayTask.objects.track("slow", now=now)
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "API_KEY": "test-key",
        "BASE_URL": server.url,
        # One request may take 10 s, but the lease is 3 s: the lease wins.
        "REQUEST_TIMEOUT": (5, 5),
        "LEASE_SECONDS": 3,
    }
    started = time.monotonic()
    with Poller(clock=lambda: now) as poller:
        summary = poller.run_round()
    took = time.monotonic() - started

    task.refresh_from_db()
    assert summary.errors == 1
    assert "lease ended" in task.last_error
    assert task.lease_owner == ""
    assert took < 3 + 2


# -- downloads ------------------------------------------------------------------------------------


def downloader(max_duration: float) -> SafeDownloader:
    return SafeDownloader(
        allow_http=True,
        allowed_hosts=None,
        allowed_networks=["127.0.0.1/32"],
        timeout=(1, 1),
        max_duration=max_duration,
    )


@pytest.mark.parametrize(
    ("part", "length"),
    [("headers", True), ("body", True), ("body", False)],
    ids=["headers", "body with a length", "body until close"],
)
def test_download_trickled_ends_at_its_max_duration(trickling, part, length):
    server = trickling(part=part, content_type="video/mp4", body=VIDEO, length=length)
    buffer = io.BytesIO()

    took, error = timed(
        lambda: downloader(2).fetch(server.url + "/v.mp4", buffer, content_type_prefix="video/")
    )

    assert isinstance(error, DownloadError)
    assert str(error) == (
        f"{server.url}/v.mp4 took longer than RUNWAY_FEED['DOWNLOAD_MAX_DURATION'] (2 s)."
    )
    assert 1.9 <= took < 7
    assert len(buffer.getvalue()) < len(VIDEO)
