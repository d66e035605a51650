"""A hostile gateway, second round: encoded answers, malformed headers, gateway times, stray
bytes and log text. Each answer costs at most the task it names.

Answers the fake CometAPI can't send (raw bytes, encodings, any header) come from a small raw
HTTP server on 127.0.0.1 defined here.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.server
import json
import logging
import subprocess
import sys
import threading
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_runway_feed import cleaning, planning
from django_runway_feed.client import MAX_RETRY_AFTER_SECONDS, CometAPIClient, parse_retry_after
from django_runway_feed.exceptions import InvalidResponseError
from django_runway_feed.feed import parse_feed
from django_runway_feed.models import EventKind, RunwayTask
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import FailureCode, Status
from django_runway_feed.testing import FakeCometAPI, Fault, TaskScript
from tests.conftest import unclean
from tests.processes import ROOT

QUIET = TaskScript(queued_for=10_000)


@dataclass
class Canned:
    """What the raw server answers to every POST, and the request headers it saw."""

    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def raw_server() -> Iterator[tuple[str, Canned]]:
    canned = Canned()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            canned.seen.append(dict(self.headers))
            self.send_response(canned.status)
            for name, value in canned.headers.items():
                self.send_header(name, value)
            if "Content-Length" not in canned.headers:
                self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", canned
    finally:
        server.shutdown()
        server.server_close()


def gzip_of_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes, built a MiB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [packer.compress(zeros) for _ in range(size >> 20)]
    return b"".join([*parts, packer.flush()])


def feed_json(task_id: str = "t-1", **fields: Any) -> bytes:
    data = {"task_id": task_id, "status": "IN_PROGRESS", "progress": "40%", **fields}
    return json.dumps({"code": "success", "message": "", "data": data}).encode()


# -- encodings --------------------------------------------------------------------------------


def test_client_asks_for_identity_encoding(raw_server):
    url, canned = raw_server
    canned.body = feed_json()

    with CometAPIClient(api_key="k", base_url=url) as client:
        client.feed("t-1")

    assert canned.seen[0]["Accept-Encoding"] == "identity"


def test_client_gzip_answer_is_decoded(raw_server):
    url, canned = raw_server
    canned.body, canned.headers = gzip.compress(feed_json()), {"Content-Encoding": "gzip"}

    with CometAPIClient(api_key="k", base_url=url) as client:
        answer = client.feed("t-1")

    assert answer["data"]["progress"] == "40%"


def test_client_chained_encodings_are_refused_unread(raw_server):
    url, canned = raw_server
    canned.body = gzip.compress(gzip.compress(feed_json()))
    canned.headers = {"Content-Encoding": "gzip, gzip"}

    with (
        CometAPIClient(api_key="k", base_url=url) as client,
        pytest.raises(InvalidResponseError, match=r"Content-Encoding .*'gzip, gzip'"),
    ):
        client.feed("t-1")


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_client_unknown_encoding_is_refused(raw_server, encoding):
    url, canned = raw_server
    canned.body, canned.headers = b"\x00\x01", {"Content-Encoding": encoding}

    with (
        CometAPIClient(api_key="k", base_url=url) as client,
        pytest.raises(InvalidResponseError, match="it asks for identity"),
    ):
        client.feed("t-1")


def test_client_gzip_bomb_stops_at_the_size_cap(raw_server):
    url, canned = raw_server
    canned.body, canned.headers = gzip_of_zeros(64 << 20), {"Content-Encoding": "gzip"}

    with (
        CometAPIClient(api_key="k", base_url=url, max_response_bytes=100_000) as client,
        pytest.raises(InvalidResponseError, match="larger than 100000 bytes"),
    ):
        client.feed("t-1")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (gzip.compress(b'{"code": "success"}', mtime=0)[:-12], "ends before its end"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage!", "could not be decoded"),
    ],
    ids=["truncated", "corrupt"],
)
def test_client_truncated_or_corrupt_gzip_is_an_invalid_answer(raw_server, body, problem):
    url, canned = raw_server
    canned.body, canned.headers = body, {"Content-Encoding": "gzip"}

    with (
        CometAPIClient(api_key="k", base_url=url) as client,
        pytest.raises(InvalidResponseError, match=problem),
    ):
        client.feed("t-1")


BOMB_PROBE = """
import json, sys
from django.conf import settings
settings.configure()
from django_runway_feed.client import CometAPIClient
from django_runway_feed.exceptions import APIError

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = peak_kib()
try:
    with CometAPIClient(api_key="k", base_url=sys.argv[1]) as client:
        client.feed("t-1")
    outcome = "accepted"
except APIError as exc:
    outcome = type(exc).__name__
print(json.dumps({"outcome": outcome, "grown_kib": peak_kib() - before}))
"""


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip"])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_compression_bomb_grows_memory_by_less_than_64_mb(raw_server, encoding):
    url, canned = raw_server
    bomb = gzip_of_zeros(1 << 30)  # 1 GiB of zeros, about 1 MB on the wire
    canned.body = bomb if encoding == "gzip" else gzip.compress(bomb)
    canned.headers = {"Content-Encoding": encoding}

    probe = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    result = json.loads(probe.stdout)
    assert result["outcome"] == "InvalidResponseError"
    assert result["grown_kib"] < 64 * 1024


# -- malformed headers ------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["\u00b2", "-1", "12, 12", "1e3", " "])
def test_client_malformed_content_length_is_an_invalid_answer(raw_server, length):
    url, canned = raw_server
    canned.body, canned.headers = feed_json(), {"Content-Length": length}

    with (
        CometAPIClient(api_key="k", base_url=url) as client,
        pytest.raises(InvalidResponseError, match="malformed Content-Length"),
    ):
        client.feed("t-1")


@pytest.mark.django_db(transaction=True)
def test_create_with_malformed_content_length_is_recorded_as_outcome_unknown(raw_server, settings):
    url, canned = raw_server
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "k", "BASE_URL": url}
    canned.body = json.dumps({"code": 200, "data": {"task_id": "t-1"}}).encode()
    canned.headers = {"Content-Length": "\u00b2"}

    task = RunwayTask.objects.generate(prompt="a cat surfing")

    assert task.status == Status.SUBMITTING
    assert task.last_error.startswith("Outcome unknown, not retried")
    assert "malformed Content-Length" in task.last_error
    assert task.events.filter(kind=EventKind.SUBMIT_ERROR).count() == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("inf", MAX_RETRY_AFTER_SECONDS),
        ("1e400", MAX_RETRY_AFTER_SECONDS),
        ("99999999999", MAX_RETRY_AFTER_SECONDS),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
        ("-5", 0.0),
        ("nan", None),
        ("\u00b2", None),
        ("30", 30.0),
    ],
)
def test_retry_after_is_bounded(header, seconds):
    assert parse_retry_after(header) == seconds


# -- gateway times ----------------------------------------------------------------------------


@pytest.fixture
def poller(api: FakeCometAPI, now_of: Callable[[], dt.datetime]) -> Iterator[Poller]:
    with Poller(clock=now_of) as poller:
        yield poller


def answer(api: FakeCometAPI, task: RunwayTask, body: bytes | str, *, times: int = 1) -> None:
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else body
    api.inject(
        Fault("body", body=text, headers={"Content-Type": "application/json"}),
        task_id=task.task_id,
        times=times,
    )


def poll(poller: Poller, task: RunwayTask, clock: Any, *, seconds: float = 0) -> RunwayTask:
    clock.advance(seconds)
    RunwayTask.objects.filter(pk=task.pk).update(next_poll_at=poller.clock())
    poller.run_round()
    task.refresh_from_db()
    return task


@pytest.mark.django_db(transaction=True)
def test_submit_time_of_one_does_not_give_a_running_task_up(api, poller, clock, now_of):
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    answer(api, task, feed_json(task.task_id, submit_time=1, start_time=1), times=2)

    task = poll(poller, task, clock, seconds=10)
    task = poll(poller, task, clock, seconds=10)

    assert task.status == Status.RUNNING
    assert task.started_at is not None
    assert task.started_at >= task.created_at  # the app's own clock, not 1970
    assert task.last_response["data"]["submit_time"] == 1  # kept as seen


@pytest.mark.django_db(transaction=True)
def test_submit_time_in_year_9999_does_not_stop_the_timeout(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "TASK_TIMEOUT": 600}
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    far = 253402300799
    answer(api, task, feed_json(task.task_id, submit_time=far, start_time=far), times=2)

    task = poll(poller, task, clock, seconds=10)
    submitted = task.submitted_at
    task = poll(poller, task, clock, seconds=700)

    assert submitted is not None
    assert submitted.year < 9999
    assert task.status == Status.FAILED
    assert task.failure_code == FailureCode.TIMEOUT


@pytest.mark.django_db(transaction=True)
def test_believable_gateway_times_are_stored(api, poller, clock, now_of):
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    started = int(now_of().timestamp()) + 3
    answer(api, task, feed_json(task.task_id, start_time=started))

    task = poll(poller, task, clock, seconds=10)

    assert task.started_at == dt.datetime.fromtimestamp(started, tz=dt.UTC)


# -- stray bytes and log text -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_answer_with_a_stray_non_utf8_byte_is_cleaned_and_applied(api, poller, clock, now_of):
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    body = feed_json(task.task_id, fail_reason="caf\udce9")  # a lone 0xE9 byte on the wire
    answer(api, task, body.replace(b"\\udce9", b"\xe9"))

    task = poll(poller, task, clock, seconds=10)

    assert task.status == Status.RUNNING
    assert task.progress == 40
    assert task.error_count == 0


@pytest.mark.django_db(transaction=True)
def test_log_records_from_a_hostile_answer_are_one_bounded_line(api, poller, clock, now_of, caplog):
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    hostile_key = "a\n2026-12-05 ERROR forged record\n" + "k" * 950_000 + "\u0000"
    body = json.dumps(
        {
            "code": "success",
            "data": {"task_id": task.task_id, "status": "IN_PROGRESS", hostile_key: 1},
        }
    )
    answer(api, task, body, times=1)
    error = json.dumps({"error": {"message": "x\nFORGED " + "m" * 100_000, "code": "e\r\n"}})
    other = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    answer(api, other, error, times=1)
    caplog.set_level(logging.DEBUG, logger="django_runway_feed")

    RunwayTask.objects.filter(pk__in=[task.pk, other.pk]).update(next_poll_at=now_of())
    poller.run_round()

    messages = [record.getMessage() for record in caplog.records]
    assert any("was cleaned before use" in message for message in messages)
    for message in messages:
        assert "\n" not in message
        assert "\r" not in message
        assert len(message) < 8_000


@pytest.mark.django_db(transaction=True)
def test_slow_answer_is_cut_before_the_lease_ends(api, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "LEASE_SECONDS": 3, "REQUEST_TIMEOUT": 5}
    task = RunwayTask.objects.track(api.add_task(QUIET), now=now_of())
    api.inject(Fault("slow", delay=3), task_id=task.task_id, times=1)

    with Poller(clock=now_of) as poller:
        poller.run_round()

    task.refresh_from_db()
    assert "before the task's lease ended" in task.last_error
    assert task.error_count == 1


# -- properties -------------------------------------------------------------------------------

TEXT_ANY = st.text(
    st.one_of(
        st.sampled_from(["\x00", "\ud800", "\n", "\r", "\u2028", "\x85", "\x1b", "%", "\\"]),
        st.characters(exclude_categories=()),
    ),
    max_size=40,
)
JSON_ANY = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        TEXT_ANY,
    ),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(TEXT_ANY, children, max_size=5)
    ),
    max_leaves=30,
)


@given(value=JSON_ANY, noise=st.binary(max_size=3), where=st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_cleaning_any_json_with_stray_bytes_is_storable_and_its_notes_one_line(value, noise, where):
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if noise:
        # Stray bytes inside the text (a string's content): at the end or in the middle.
        at = min(where, len(raw))
        raw = raw[:at] + noise + raw[at:]
    try:
        cleaned = cleaning.loads(raw)
    except (ValueError, RecursionError):
        return  # not JSON any more: the client reports an invalid answer
    assert unclean(cleaned.value) == []
    json.dumps(cleaned.value, allow_nan=False)
    for note in cleaned.notes:
        text = str(note)
        assert "\n" not in text
        assert "\r" not in text
        assert len(text) < 1_000


@given(text=st.one_of(TEXT_ANY, st.text(max_size=5_000)), limit=st.integers(1, 500))
def test_loggable_is_one_printable_bounded_line(text, limit):
    line = cleaning.loggable(text, limit)

    assert len(line) <= limit * 10 + 3  # an escaped character takes at most 10
    # No control, line or paragraph separator, or lone surrogate: nothing a log can split on.
    assert not [char for char in line if unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs")]


@given(header=st.one_of(TEXT_ANY, st.from_regex(r"-?[0-9]{1,400}(\.[0-9]+)?(e[0-9]{1,4})?")))
def test_retry_after_of_any_header_is_none_or_bounded(header):
    seconds = parse_retry_after(header)

    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_SECONDS


UNIX_TIMES = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 253402300799, "1", "99999999999999"]),
)


@given(
    submit=UNIX_TIMES,
    start=UNIX_TIMES,
    finish=UNIX_TIMES,
    status=st.sampled_from(["QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE"]),
)
def test_plan_never_takes_a_gateway_time_outside_the_rows_lifetime(submit, start, finish, status):
    now = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
    task = SimpleNamespace(
        status=Status.RUNNING,
        progress=10,
        error_count=0,
        provider_status="",
        provider_inner_status="",
        action="",
        created_at=now - dt.timedelta(hours=1),
        submitted_at=now - dt.timedelta(hours=1),
        started_at=None,
        finished_at=None,
        resumed_at=None,
        last_polled_at=now - dt.timedelta(seconds=10),
        next_poll_at=now,
        route="generate",
        request={},
        expects_callback=False,
        poll_count=3,
    )
    body = {
        "code": "success",
        "data": {
            "task_id": "t-1",
            "status": status,
            "progress": "50%",
            "submit_time": submit,
            "start_time": start,
            "finish_time": finish,
            "result_url": "https://example.com/v.mp4",
        },
    }
    plan = planning.plan_snapshot(task, parse_feed(cleaning.clean(body).value), now=now)

    assert "submitted_at" not in plan.fields
    for name in ("started_at", "finished_at"):
        value = plan.fields.get(name)
        assert value is None or task.created_at - planning.GATEWAY_CLOCK_SKEW <= value
        assert value is None or value <= now + planning.GATEWAY_CLOCK_SKEW
    assert plan.fields.get("failure_code") != FailureCode.TIMEOUT
