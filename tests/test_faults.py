"""The fault matrix of docs/reliability.md, row by row, through the fake CometAPI.

Rows already proven elsewhere are referenced from docs/reliability.md rather than repeated here
(test_polling.py, test_client.py, test_feed.py). Time is the fake clock's unless a test says
otherwise; no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from django_runway_feed.budget import MAX_HOLD_SECONDS, Grant, RequestBudget
from django_runway_feed.health import check_pause, status_report
from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.pause import settings_fingerprint
from django_runway_feed.planning import LAST_ERROR_CHARS, MAX_BACKOFF_SECONDS
from django_runway_feed.polling import AUTH_PAUSE_SECONDS, Poller
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeCometAPI, Fault, TaskScript
from tests.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = TaskScript(queued_for=10_000)


@pytest.fixture
def poller(api: FakeCometAPI, now_of: Callable[[], dt.datetime]) -> Any:
    with Poller(clock=now_of) as poller:
        yield poller


def track(api: FakeCometAPI, now_of: Callable[[], dt.datetime], script: TaskScript) -> RunwayTask:
    return RunwayTask.objects.track(api.add_task(script), now=now_of())


def seconds_until_next_poll(task: RunwayTask, now: dt.datetime) -> float:
    task.refresh_from_db()
    assert task.next_poll_at is not None
    return (task.next_poll_at - now).total_seconds()


def assert_unchanged_with_error(task: RunwayTask, *, status: str = Status.QUEUED) -> None:
    task.refresh_from_db()
    assert task.status == status
    assert task.error_count == 1
    assert task.lease_owner == ""
    assert not TaskEvent.objects.filter(task=task, kind=EventKind.TRANSITION).exists()


# -- 429 ------------------------------------------------------------------------------------------


def test_rate_limit_retry_after_http_date_sets_next_poll(api, poller, now_of):
    task = track(api, now_of, QUIET)
    # parse_retry_after measures an HTTP date against the real clock.
    when = email.utils.format_datetime(dt.datetime.now(tz=dt.UTC) + dt.timedelta(seconds=120))
    api.inject(Fault.rate_limited(retry_after=when), task_id=task.task_id)

    poller.run_round()

    assert seconds_until_next_poll(task, now_of()) >= 100
    assert_unchanged_with_error(task)


def test_rate_limit_without_retry_after_backs_off(api, poller, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5}
    task = track(api, now_of, QUIET)
    api.inject(Fault.rate_limited(), task_id=task.task_id)

    poller.run_round()

    # POLL_INTERVAL after the first error, plus 0-20 % jitter.
    assert 5 <= seconds_until_next_poll(task, now_of()) <= 6
    assert "HTTP 429" in task.last_error


def test_rate_limit_huge_retry_after_is_clamped(api, poller, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault.rate_limited(retry_after="99999999"), task_id=task.task_id)

    poller.run_round()

    assert seconds_until_next_poll(task, now_of()) <= MAX_BACKOFF_SECONDS * 1.1


def test_rate_limit_no_request_for_task_before_retry_after(api, poller, clock, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault.rate_limited(retry_after="40"), task_id=task.task_id)

    poller.run_round()
    for _ in range(39):
        clock.advance(1)
        poller.run_round()
    calls_during_delay = api.call_count(task.task_id)
    clock.advance(2)
    poller.run_round()

    assert calls_during_delay == 1
    assert api.call_count(task.task_id) == 2


def test_rate_limit_storm_holds_every_task(api, clock, now_of):
    storm = [track(api, now_of, QUIET) for _ in range(4)]
    api.inject(Fault.rate_limited(retry_after="30"), times=4)
    with Poller(clock=now_of, budget=RequestBudget(None, now=clock.now)) as poller:
        poller.run_round()
        # A task that was not even asked about yet must wait for the storm to pass too.
        bystander = track(api, now_of, QUIET)
        clock.advance(20)
        held = poller.run_round()
        calls_during_hold = api.call_count()
        clock.advance(11)
        after = poller.run_round()

    assert held.throttled == 1
    assert held.claimed == 0
    assert calls_during_hold == 4
    assert after.polled == 5
    assert api.call_count(bystander.task_id) == 1
    assert [api.call_count(task.task_id) for task in storm] == [2, 2, 2, 2]


def test_rate_limit_of_a_few_tasks_is_not_a_storm(api, clock, now_of):
    tasks = [track(api, now_of, QUIET) for _ in range(8)]
    api.inject(Fault.rate_limited(retry_after="30"), times=2)
    with Poller(clock=now_of, budget=RequestBudget(None, now=clock.now)) as poller:
        first = poller.run_round()
        bystander = track(api, now_of, QUIET)
        clock.advance(1)
        second = poller.run_round()

    assert first.errors == 2
    assert second.throttled == 0
    assert api.call_count(bystander.task_id) == 1
    assert sum(api.call_count(task.task_id) for task in tasks) == 8


# -- 5xx, timeouts, connections ----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 524])
def test_server_error_keeps_status_and_counts_error(api, poller, now_of, status):
    task = track(api, now_of, QUIET)
    api.inject(Fault.server_error(status), task_id=task.task_id)

    summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert f"HTTP {status}" in task.last_error


def test_server_errors_back_off_exponentially_then_recover(api, poller, clock, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "POLL_INTERVAL": 5}
    task = track(api, now_of, TaskScript(queued_for=0, run_for=400))
    api.inject(Fault.server_error(503), times=4, task_id=task.task_id)

    for _ in range(250):
        poller.run_round()
        clock.advance(1)

    calls = api.feed_calls(task.task_id)
    assert [call.status_code for call in calls[:5]] == [503, 503, 503, 503, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls[:5])]
    # 5, 5, 10, 20 s (x1.0 .. x1.2 jitter, +1 s of round granularity).
    for gap, expected in zip(gaps, [5, 5, 10, 20], strict=True):
        assert expected <= gap <= expected * 1.2 + 1
    task.refresh_from_db()
    assert task.status == Status.RUNNING
    assert task.error_count == 0
    assert task.last_error == ""


def test_backoff_jitter_spreads_tasks(api, poller, now_of):
    tasks = [track(api, now_of, QUIET) for _ in range(20)]
    api.inject(Fault.server_error(500), times=20)

    poller.run_round()

    delays = {round(seconds_until_next_poll(task, now_of()), 3) for task in tasks}
    assert len(delays) > 10


def test_read_timeout_is_an_error_not_a_crash(api, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "REQUEST_TIMEOUT": (1, 0.2)}
    task = track(api, now_of, QUIET)
    api.inject(Fault.slow(1.0), task_id=task.task_id)

    with Poller(clock=now_of) as poller:
        summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert "timed out" in task.last_error


def test_connection_refused_is_an_error_not_a_crash(api, now_of, settings):
    task = track(api, now_of, QUIET)
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BASE_URL": "http://127.0.0.1:9"}

    with Poller(clock=now_of) as poller:
        summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert "could not be reached" in task.last_error


def test_connection_reset_mid_body_is_an_error_not_a_crash(api, poller, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault.reset(), task_id=task.task_id)

    summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert "TransientAPIError" in task.last_error


class TricklingServer:
    """Answers one request with a valid feed answer, one byte every ``pause`` seconds.

    Each byte comes well within the client's read timeout, so only a deadline for the whole
    request stops the client; ``sent`` says how much of the answer went out before it hung up.
    """

    def __init__(self, task_id: str, *, chunked: bool, pause: float = 0.1) -> None:
        answer = {"code": "success", "data": {"task_id": task_id, "status": "IN_PROGRESS"}}
        self.body = json.dumps(answer).encode()
        self.chunked, self.pause, self.sent = chunked, pause, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _address = self.listener.accept()
        with conn:
            conn.recv(65536)
            length = (
                "Transfer-Encoding: chunked"
                if self.chunked
                else f"Content-Length: {len(self.body)}"
            )
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n\r\n".encode()
            )
            try:
                for index in range(len(self.body)):
                    byte = self.body[index : index + 1]
                    conn.sendall(b"1\r\n" + byte + b"\r\n" if self.chunked else byte)
                    self.sent += 1
                    time.sleep(self.pause)
                if self.chunked:
                    conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up, as it should

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=30)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_trickling_body_is_cut_off_at_the_request_timeout(now_of, settings, chunked):
    task = RunwayTask.objects.track("trickled", now=now_of())
    server = TricklingServer("trickled", chunked=chunked)
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "API_KEY": "test-key",
        "BASE_URL": server.url,
        "REQUEST_TIMEOUT": (1, 0.5),
    }
    try:
        with Poller(clock=now_of) as poller:
            summary = poller.run_round()
    finally:
        server.close()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert "took longer than 1.5 s" in task.last_error
    assert server.sent < len(server.body)


# -- bodies that are not what they claim --------------------------------------------------------


def _bodies(task_id: str) -> dict[str, str]:
    record = {"task_id": task_id, "status": "IN_PROGRESS", "progress": "10%"}
    return {
        "truncated JSON": '{"code": "success", "data": {"task_id": "' + task_id,
        "HTML": "<!DOCTYPE html><html><body>Bad gateway</body></html>",
        "JSON array": "[1, 2, 3]",
        "JSON string": '"success"',
        "data not an object": json.dumps({"code": "success", "data": "IN_PROGRESS"}),
        "no status anywhere": json.dumps({"code": "success", "data": {"task_id": task_id}}),
        "task id of a number": json.dumps({"code": "success", "data": {**record, "task_id": 7}}),
        "another task": json.dumps({"code": "success", "data": {**record, "task_id": "other"}}),
        "deep nesting": "[" * 100_000 + "]" * 100_000,
    }


@pytest.mark.parametrize("kind", list(_bodies("x")))
def test_malformed_200_is_kept_and_task_unchanged(api, poller, now_of, kind):
    task = track(api, now_of, QUIET)
    body = _bodies(task.task_id)[kind]
    api.inject(Fault(kind="body", body=body), task_id=task.task_id)

    summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert task.last_error.startswith("InvalidResponseError")
    assert len(task.last_error) <= LAST_ERROR_CHARS


def test_malformed_body_kept_for_inspection_truncated(api, poller, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault(kind="body", body="<html>" + "x" * 50_000), task_id=task.task_id)

    poller.run_round()

    task.refresh_from_db()
    assert "<html>xxxx" in task.last_error
    assert len(task.last_error) == LAST_ERROR_CHARS


def test_wrong_types_in_fields_are_recorded_not_applied(api, poller, now_of):
    task = track(api, now_of, QUIET)
    weird = {
        "code": "success",
        "data": {
            "task_id": task.task_id,
            "status": "DANCING",
            "progress": "250%",
            "submit_time": "yesterday",
            "start_time": 0,
            "finish_time": {"when": "later"},
            "fail_reason": ["not", "a", "string"],
            "data": {"id": task.task_id, "status": ["PENDING"], "progress": "abc"},
        },
    }
    api.inject(Fault(kind="body", body=json.dumps(weird)), task_id=task.task_id)

    summary = poller.run_round()

    task.refresh_from_db()
    assert summary.errors == 0
    assert task.status == Status.QUEUED
    assert task.provider_status == "DANCING"
    assert 0 <= task.progress <= 100
    assert task.last_response == weird
    assert task.started_at is None
    assert task.finished_at is None


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_body_over_the_cap_is_invalid_and_task_unchanged(api, now_of, settings, chunked):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "MAX_RESPONSE_BYTES": 50_000}
    task = track(api, now_of, QUIET)
    fault = Fault.huge(2_000_000) if chunked else Fault(kind="body", body="x" * 2_000_000)
    api.inject(fault, task_id=task.task_id)

    with Poller(clock=now_of) as poller:
        summary = poller.run_round()

    assert summary.errors == 1
    assert_unchanged_with_error(task)
    assert "larger than 50000 bytes" in task.last_error


def test_redirect_is_reported_as_configuration_problem(api, poller, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault.redirect(), task_id=task.task_id)

    poller.run_round()

    assert_unchanged_with_error(task)
    assert "redirects are not followed" in task.last_error
    assert "RUNWAY_FEED['BASE_URL']" in task.last_error
    assert api.call_count() == 1


# -- 401 / 403 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.unauthorized(), Fault.quota()], ids=["401", "403"])
def test_refused_key_pauses_every_task_and_fails_none(api, poller, clock, now_of, fault):
    tasks = [track(api, now_of, QUIET) for _ in range(5)]
    api.inject(fault, times=5)

    first = poller.run_round()
    for _ in range(10):
        clock.advance(10)
        poller.run_round()

    assert first.paused
    assert api.call_count() == 5
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.error_count, task.lease_owner) == (Status.QUEUED, 0, "")
    assert PollerState.objects.get(pk=1).pause_reason.startswith("CometAPI refused")


def test_refused_key_pause_resumes_after_cool_down(api, poller, clock, now_of):
    task = track(api, now_of, QUIET)
    api.inject(Fault.unauthorized())

    poller.run_round()
    clock.advance(AUTH_PAUSE_SECONDS - 1)
    during = poller.run_round()
    clock.advance(2)
    after = poller.run_round()

    assert during.paused
    assert not after.paused
    assert after.polled == 1
    assert api.call_count(task.task_id) == 2


def test_refused_key_pause_lifts_at_once_when_the_key_changes(api, poller, clock, now_of, settings):
    task = track(api, now_of, QUIET)
    api.api_key = "rotated-key"  # the old key is refused from now on

    poller.run_round()
    assert check_pause(now=now_of())
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "rotated-key"}
    clock.advance(1)
    assert check_pause(now=now_of()) == []
    assert status_report(now=now_of())["poller"]["paused"] is False
    with Poller(clock=now_of) as next_run:
        summary = next_run.run_round()

    assert not summary.paused
    assert summary.polled == 1
    assert api.call_count(task.task_id) == 2
    state = PollerState.objects.get(pk=1)
    assert (state.paused_until, state.pause_fingerprint) == (None, "")


def test_refused_key_pause_lifts_when_base_url_changes(api, poller, clock, now_of, settings):
    track(api, now_of, QUIET)
    api.inject(Fault.quota())
    poller.run_round()

    with FakeCometAPI(api_key="test-key", clock=clock) as other:
        settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "BASE_URL": other.url}

        assert poller.paused_until(now_of()) is None


def test_pause_stores_keyed_fingerprint_never_the_key(api, now_of, settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "API_KEY": "sk-live-abcdef0123456789"}
    track(api, now_of, QUIET)

    with Poller(clock=now_of) as poller:
        poller.run_round()  # the fake expects another key: 401

    state = PollerState.objects.get(pk=1)
    assert state.paused_until is not None
    assert state.pause_fingerprint == settings_fingerprint()
    assert len(state.pause_fingerprint) == 32
    assert "abcdef0123456789" not in json.dumps(list(PollerState.objects.values()), default=str)
    settings.SECRET_KEY = "another-secret"
    assert settings_fingerprint() != state.pause_fingerprint


def test_pause_shown_by_runway_status(api, poller, now_of, capsys):
    track(api, now_of, QUIET)
    api.inject(Fault.quota())
    poller.run_round()

    call_command("runway_status")

    out = capsys.readouterr().out
    assert "Polling paused until" in out
    assert "insufficient_user_quota" in out or "HTTP 403" in out


# -- the request budget ---------------------------------------------------------------------------


class SteppedTime:
    """Epoch seconds a test moves by hand (for budgets)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


def test_budget_grants_a_burst_then_its_rate():
    now = SteppedTime()
    budget = RequestBudget(10, now=now)

    first = budget.reserve(100)
    second = budget.reserve(5)
    now.value += 0.5
    third = budget.reserve(100)

    assert first.granted == 10
    assert second.granted == 0
    assert 0.05 <= second.retry_in <= 0.1 + 1e-9
    assert third.granted == 5


def test_budget_peek_reserves_nothing():
    budget = RequestBudget(10, now=SteppedTime())

    assert budget.available(4).granted == 4
    assert budget.available(100).granted == 10
    assert budget.reserve(100).granted == 10


def test_budget_shared_by_two_workers_never_exceeds_rate_times_time_plus_burst():
    now = SteppedTime()
    workers = [RequestBudget(20, now=now), RequestBudget(20, now=now)]
    granted = 0
    for step in range(200):
        now.value += 0.013
        granted += workers[step % 2].reserve(7).granted
        elapsed = now.value - 1_000.0
        assert granted <= 20 * elapsed + 20 + 1e-9
    # And it is not starved either: over 2.6 s it gives about rate x time + burst.
    assert granted >= 20 * 2.6


def test_budget_off_grants_everything_but_honours_a_hold():
    now = SteppedTime()
    budget = RequestBudget(None, now=now)

    assert budget.reserve(1_000).granted == 1_000
    budget.hold(30)
    held = budget.reserve(1)
    now.value += 31
    assert held == Grant(0, 30.0)
    assert budget.reserve(1).granted == 1


@pytest.mark.parametrize("rate", [10, None], ids=["rate", "unlimited"])
def test_budget_ahead_of_every_clock_is_stale_not_a_stall(rate):
    """A ``budget_tat`` an hour ahead (a skewed host wrote it, or this clock stepped back)."""
    now = SteppedTime()
    PollerState.objects.update_or_create(pk=1, defaults={"budget_tat": now.value + 3_600})
    budget = RequestBudget(rate, now=now)

    grant = budget.reserve(100)

    assert grant.granted == (10 if rate else 100)
    assert PollerState.objects.get(pk=1).budget_tat <= now.value + 1
    # And a hold written over such a value is still a hold.
    PollerState.objects.filter(pk=1).update(budget_tat=now.value + 3_600)
    budget.hold(30)
    assert budget.reserve(1).granted == 0
    now.value += 32
    assert budget.reserve(1).granted == 1


def test_budget_hold_is_clamped():
    now = SteppedTime()
    budget = RequestBudget(10, now=now)

    budget.hold(99_999_999)
    held = budget.reserve(1)
    now.value += MAX_HOLD_SECONDS + 1

    assert held.granted == 0
    assert MAX_HOLD_SECONDS - 1 <= held.retry_in <= MAX_HOLD_SECONDS + 1
    assert budget.reserve(1).granted == 1


def test_budget_setting_none_disables_it(settings):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "MAX_REQUESTS_PER_SECOND": None}

    assert RequestBudget.from_settings().rate is None


def test_budget_holds_across_two_pollers(api, now_of, settings):
    """Two poll runs at once, real time: requests sent stay within rate x elapsed + burst."""
    rate = 40
    settings.RUNWAY_FEED = {
        **settings.RUNWAY_FEED,
        "MAX_REQUESTS_PER_SECOND": rate,
        "BATCH_SIZE": 25,
        "CONCURRENCY": 4,
    }
    tasks = [track(api, now_of, QUIET) for _ in range(400)]
    due_at = RunwayTask.objects.get(pk=tasks[0].pk).next_poll_at

    def poll_for_a_while() -> None:
        with Poller(clock=now_of) as poller:
            poller.run(window=1.5, max_idle_sleep=0.2)

    started = time.time()
    errors = run_in_threads(2, poll_for_a_while)
    elapsed = time.time() - started

    assert errors == []
    calls = Counter(call.task_id for call in api.feed_calls())
    assert sum(calls.values()) <= rate * elapsed + rate
    assert sum(calls.values()) >= rate  # the first burst at least
    assert set(calls.values()) == {1}
    # The tasks the budget did not reach are untouched and still due.
    untouched = RunwayTask.objects.exclude(task_id__in=list(calls))
    assert untouched.count() == 400 - len(calls)
    assert not untouched.exclude(poll_count=0, lease_owner="", next_poll_at=due_at).exists()


# -- SQLite or PostgreSQL busy ------------------------------------------------------------------


def test_locked_database_is_an_empty_round(api, poller, now_of):
    track(api, now_of, QUIET)
    release = _lock_task_table()
    try:
        summary = poller.run_round()
    finally:
        release()

    assert summary.claimed == 0
    assert api.call_count() == 0
    # Counted like any database error, so a run gives the other writer a moment.
    assert poller.database_errors == 1
    after = poller.run_round()
    assert after.polled == 1


def _lock_task_table() -> Callable[[], None]:
    """Take the write lock another worker would hold; return the function that releases it."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        import sqlite3

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 100")
        other = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        return lambda: (other.rollback(), other.close())  # type: ignore[func-returns-value]
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '100ms'")
    other = psycopg.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"] or None,
        password=settings_dict["PASSWORD"] or None,
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
    )
    other.execute(f"LOCK TABLE {RunwayTask._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    return lambda: (other.rollback(), other.close())  # type: ignore[func-returns-value]


def test_reliability_doc_names_only_existing_tests():
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "reliability.md").read_text()
    references = set(re.findall(r"`(tests/\w+\.py)::(\w+)`", doc))

    assert len(references) > 40
    missing = [
        f"{path}::{name}"
        for path, name in sorted(references)
        if not re.search(rf"^def {name}\(", (root / path).read_text(), re.MULTILINE)
    ]
    assert missing == []
