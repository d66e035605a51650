"""Poison-proof polling: an answer the database can't store costs one task, never the run.

Answers are served over real HTTP by the fake CometAPI (``Fault("body")`` sends any text as a
200). A row the database refuses for reasons no cleaning can foresee is made with a trigger
that refuses one marked row, on SQLite and PostgreSQL alike: the database says no, not a patch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_runway_feed import actions, cleaning, services
from django_runway_feed.models import EventKind, RunwayTask, TaskEvent
from django_runway_feed.polling import Poller
from django_runway_feed.statuses import FailureCode, Status
from django_runway_feed.testing import FakeCometAPI, Fault, TaskScript
from tests.conftest import unclean

pytestmark = pytest.mark.django_db(transaction=True)

QUIET = TaskScript(queued_for=10_000)
REFUSED = "REFUSE-ME"
TABLE = RunwayTask._meta.db_table


@pytest.fixture
def poller(api: FakeCometAPI, now_of: Callable[[], dt.datetime]) -> Iterator[Poller]:
    with Poller(clock=now_of) as poller:
        yield poller


def track(api: FakeCometAPI, now_of: Callable[[], dt.datetime]) -> RunwayTask:
    return RunwayTask.objects.track(api.add_task(QUIET), now=now_of())


def answer(api: FakeCometAPI, task: RunwayTask, body: str, *, times: int = 1) -> None:
    """The fake answers the next ``times`` feed requests for ``task`` with ``body`` (HTTP 200)."""
    api.inject(
        Fault("body", body=body, headers={"Content-Type": "application/json"}),
        task_id=task.task_id,
        times=times,
    )


def feed_body(task_id: str, **fields: Any) -> dict[str, Any]:
    data = {"task_id": task_id, "status": "QUEUED", "progress": "10%", **fields}
    return {"code": "success", "message": "", "data": data}


def stored(task: RunwayTask) -> list[str]:
    """Every field of the row and of its events, as read back, that is not clean."""
    row = RunwayTask.objects.filter(pk=task.pk).values().get()
    events = list(TaskEvent.objects.filter(task_id=task.pk).values("message", "payload"))
    return unclean(row) + unclean(events)


@contextlib.contextmanager
def refusing(table: str, event: str, condition: str) -> Iterator[None]:
    """While open, the database refuses every ``event`` (UPDATE, INSERT) on ``table`` whose new
    row meets ``condition``: a trigger, on SQLite and PostgreSQL alike."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                f"IF {condition} THEN RAISE EXCEPTION 'refused by the test trigger' "
                "USING ERRCODE = 'data_exception'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse_poison BEFORE {event} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse_poison BEFORE {event} ON {table} WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER refuse_poison ON {table}")
                cursor.execute("DROP FUNCTION refuse_poison()")
            else:
                cursor.execute("DROP TRIGGER refuse_poison")


@pytest.fixture
def refusing_database() -> Iterator[None]:
    """The database refuses any UPDATE that would store the provider status ``REFUSE-ME``."""
    condition = f"NEW.provider_status = '{REFUSED}' OR NEW.provider_inner_status = '{REFUSED}'"
    with refusing(TABLE, "UPDATE", condition):
        yield


def refused_answer(task: RunwayTask, **fields: Any) -> str:
    return json.dumps(feed_body(task.task_id, status=REFUSED, **fields))


def assert_written_and_released(task: RunwayTask, *, polls: int = 1) -> None:
    task.refresh_from_db()
    assert task.poll_count == polls
    assert task.lease_owner == ""
    assert task.last_polled_at is not None


# -- feed answers -------------------------------------------------------------------------------

POISONS = {
    "overflowing number": '"progress": 1e400',
    "NaN": '"progress": NaN',
    "Infinity": '"extra": [Infinity, -Infinity]',
    "NUL in a string": '"fail_reason": "a\\u0000b"',
    "lone surrogate": '"action": "x\\ud800y"',
    "NUL in a key": '"ke\\u0000y": 1',
    "deep nesting": '"extra": ' + "[" * 980 + "]" * 980,
}


@pytest.mark.parametrize("poison", list(POISONS.values()), ids=list(POISONS))
def test_poll_poisoned_answer_is_stored_clean_and_batch_written(api, poller, now_of, poison):
    tasks = [track(api, now_of) for _ in range(3)]
    poisoned = tasks[1]
    body = json.dumps(feed_body(poisoned.task_id))[:-2] + ", " + poison + "}}"
    answer(api, poisoned, body)

    summary = poller.run_round()

    assert summary.polled == 3
    for task in tasks:
        assert_written_and_released(task)
        assert stored(task) == []
    poisoned.refresh_from_db()
    assert poisoned.error_count == 0
    assert poisoned.last_response["data"]["task_id"] == poisoned.task_id


def test_poll_poisoned_transition_payload_is_stored_clean(api, poller, now_of):
    task = track(api, now_of)
    body = feed_body(
        task.task_id,
        status="FAILURE",
        fail_reason="bad\u0000 input\ud800",
        progress=math.inf,
    )
    answer(api, task, json.dumps(body))

    poller.run_round()

    task.refresh_from_db()
    assert task.status == Status.FAILED
    assert task.fail_reason == "bad input"
    event = TaskEvent.objects.get(task=task, kind=EventKind.TRANSITION)
    assert event.payload["data"]["fail_reason"] == "bad input"
    assert event.payload["data"]["progress"] is None
    assert stored(task) == []


def test_poll_non_json_body_with_nul_gives_a_storable_last_error(api, poller, now_of):
    task = track(api, now_of)
    api.inject(Fault("body", body="<html>\x00oops\udcff</html>"), task_id=task.task_id)

    summary = poller.run_round()

    task.refresh_from_db()
    assert summary.errors == 1
    assert "<html>oops" in task.last_error
    assert stored(task) == []


# -- a row the database refuses ---------------------------------------------------------------


def test_poll_row_refused_by_database_costs_only_that_task(api, poller, now_of, refusing_database):
    tasks = [track(api, now_of) for _ in range(3)]
    refused = tasks[0]
    answer(api, refused, refused_answer(refused))

    summary = poller.run_round()

    assert summary.polled == 3
    assert summary.errors == 1
    for task in tasks:
        assert_written_and_released(task)
    refused.refresh_from_db()
    assert refused.error_count == 1
    assert refused.last_error.startswith(
        "UnstorableAnswerError: the database refused this answer ("
    )
    assert refused.provider_status == ""
    assert refused.next_poll_at is not None
    assert refused.next_poll_at > now_of()


def test_poll_refused_transition_costs_only_that_task(api, poller, now_of, refusing_database):
    tasks = [track(api, now_of) for _ in range(3)]
    refused = tasks[2]
    body = feed_body(
        refused.task_id,
        status="SUCCESS",
        result_url="https://cdn.example.com/v.mp4",
        data={"id": refused.task_id, "status": REFUSED},
    )
    answer(api, refused, json.dumps(body))

    summary = poller.run_round()

    assert summary.errors == 1
    for task in tasks:
        assert_written_and_released(task)
    refused.refresh_from_db()
    assert refused.status == Status.QUEUED
    assert refused.error_count == 1
    assert not TaskEvent.objects.filter(task=refused).exclude(kind=EventKind.TRACKED).exists()


def test_poll_refused_row_inside_a_transaction_leaves_it_usable(
    api, poller, now_of, refusing_database
):
    tasks = [track(api, now_of) for _ in range(3)]
    answer(api, tasks[1], refused_answer(tasks[1]))

    with transaction.atomic():
        summary = poller.run_round()
        assert RunwayTask.objects.filter(lease_owner="").count() == 3

    assert summary.errors == 1
    for task in tasks:
        assert_written_and_released(task)


def test_poll_refused_task_still_gives_up_at_task_timeout(
    api, poller, clock, now_of, refusing_database, settings
):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "TASK_TIMEOUT": 600}
    task = track(api, now_of)
    clock.advance(601)
    answer(api, task, refused_answer(task))

    poller.run_round()

    task.refresh_from_db()
    assert (task.status, task.failure_code) == (Status.FAILED, FailureCode.TIMEOUT)
    assert task.lease_owner == ""
    event = TaskEvent.objects.get(task=task, kind=EventKind.TRANSITION)
    assert event.payload is None


def test_refresh_from_feed_refused_row_ends_cleanly(api, now_of, refusing_database):
    task = track(api, now_of)
    answer(api, task, refused_answer(task))

    task.refresh_from_feed(now=now_of())

    assert task.error_count == 1
    assert task.lease_owner == ""


def test_runway_poll_task_refused_row_ends_cleanly(api, now_of, refusing_database, capsys):
    task = track(api, now_of)
    answer(api, task, refused_answer(task))

    call_command("runway_poll", "--task", task.task_id)

    assert capsys.readouterr().out == f"{task.task_id}: queued 0%\n"
    task.refresh_from_db()
    assert task.error_count == 1


def test_poll_now_refused_row_is_reported_not_raised(api, now_of, refusing_database):
    task = track(api, now_of)
    answer(api, task, refused_answer(task))

    report = actions.poll_now([task], now=now_of())

    assert report.message() == (
        "Polled 1 task. Failed for 1 task: UnstorableAnswerError: the database refused this "
        "answer (IntegrityError: refused by the test trigger); the task is polled again later."
        if connection.vendor == "sqlite"
        else "Polled 1 task. Failed for 1 task: UnstorableAnswerError: the database refused this "
        "answer (DataError: refused by the test trigger); the task is polled again later."
    )


def test_admin_poll_now_refused_row_is_a_message_not_a_500(
    admin_client, api, now_of, refusing_database
):
    task = track(api, now_of)
    answer(api, task, refused_answer(task))

    response = admin_client.post(
        "/admin/django_runway_feed/runwaytask/",
        {"action": "poll_now_action", "_selected_action": [task.pk]},
        follow=True,
    )

    assert response.status_code == 200
    [message] = [str(message) for message in response.context["messages"]]
    assert message.startswith("Polled 1 task. Failed for 1 task: UnstorableAnswerError: ")
    task.refresh_from_db()
    assert task.error_count == 1
    assert task.lease_owner == ""


# -- create answers -----------------------------------------------------------------------------


def create_answers(api: FakeCometAPI, task_id: str) -> None:
    body = {"code": 200, "message": "", "msg": "success", "data": {"task_id": task_id}}
    api.inject(Fault("body", body=json.dumps(body)), route="create")


def test_submit_task_id_with_nul_is_followed_cleaned_and_recorded(api):
    create_answers(api, "abc\u0000def")

    task = RunwayTask.objects.generate("a cat")

    assert (task.status, task.task_id) == (Status.QUEUED, "abcdef")
    assert "'abc\\x00def'" in task.last_error
    note = TaskEvent.objects.get(task=task, kind=EventKind.SUBMIT_ERROR)
    assert note.message == task.last_error
    assert note.message == (
        "CometAPI accepted the task, but its id 'abc\\x00def' holds characters that cannot be "
        "stored; it is followed as 'abcdef'. Check it in CometAPI's dashboard."
    )
    assert stored(task) == []


@pytest.mark.parametrize("task_id", ["\u0000", "abc\ndef", "x" * 129], ids=["nul", "nl", "long"])
def test_submit_task_id_unusable_is_recorded_not_silent(api, task_id):
    create_answers(api, task_id)

    task = RunwayTask.objects.generate("a cat")

    assert (task.status, task.task_id) == (Status.SUBMITTING, None)
    assert task.last_error.startswith(
        f"CometAPI accepted the task, but its id {cleaning.escaped(task_id)} is not a printable id"
    )
    assert TaskEvent.objects.filter(task=task, kind=EventKind.SUBMIT_ERROR).count() == 1
    assert stored(task) == []


def test_submit_task_id_taken_by_another_row_is_recorded_not_raised(api, now_of):
    other = track(api, now_of)
    create_answers(api, other.task_id)

    task = RunwayTask.objects.generate("a cat")

    assert (task.status, task.task_id) == (Status.SUBMITTING, None)
    assert task.last_error.startswith(
        f"CometAPI accepted the task as '{other.task_id}', but that id could not be stored "
        "(IntegrityError)"
    )
    assert TaskEvent.objects.filter(task=task, kind=EventKind.SUBMIT_ERROR).count() == 1


# -- arbitrary answers through the real path ------------------------------------------------------

HUGE = "__huge_number__"
# Characters a database refuses are drawn often, not left to the odds of the whole range.
CHARACTERS = st.one_of(
    st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80", "%", "0", "\n"]),
    st.characters(exclude_categories=()),
)
TEXT = st.text(CHARACTERS, max_size=20)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(HUGE),
    TEXT,
    # A huge string: well under MAX_RESPONSE_BYTES, far over every column's length.
    st.builds(lambda char, count: char * count, CHARACTERS, st.integers(1000, 60_000)),
    # Nesting from harmless to past the cap (the JSON decoder itself stops near 1,000).
    st.integers(0, 400).map(lambda depth: json.loads("[" * depth + "]" * depth or "null")),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4)


JSON = st.recursive(SCALARS, containers, max_leaves=12)
STATUSES = st.sampled_from(
    ["QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE", "RUNNING", "SUCCEEDED", "3", "2", REFUSED]
)


@st.composite
def feed_answers(draw: st.DrawFn, task_id: str = "TASK") -> str:
    """A feed answer: mostly the documented shape, any field any value, extra keys anywhere."""
    data: dict[str, Any] = {"task_id": task_id}
    for key in ("status", "progress", "fail_reason", "result_url", "action", "finish_time"):
        if draw(st.booleans()):
            data[key] = draw(STATUSES if key == "status" else JSON)
    if draw(st.booleans()):
        inner = {"id": task_id, "status": draw(STATUSES | JSON), "output": draw(JSON)}
        data["data"] = inner
    data.update(draw(st.dictionaries(TEXT, JSON, max_size=3)))
    body: Any = {"code": draw(st.sampled_from(["success", 200, "200"]) | JSON), "data": data}
    if draw(st.integers(0, 9)) == 0:
        body = draw(JSON)  # not even an object, now and then
    return json.dumps(body, allow_nan=True).replace(f'"{HUGE}"', "1e400")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=feed_answers())
def test_poll_arbitrary_answers_never_raise_and_store_only_clean_data(
    api, now_of, refusing_database, body
):
    tasks = [track(api, now_of) for _ in range(3)]
    poisoned = tasks[1]
    answer(api, poisoned, body.replace('"TASK"', json.dumps(poisoned.task_id)))

    with Poller(clock=now_of) as poller:
        summary = poller.run_round(task_ids=[task.pk for task in tasks], due_only=False)

    assert summary.claimed == 3
    for task in tasks:
        assert_written_and_released(task)
        assert stored(task) == []
    for task in (tasks[0], tasks[2]):
        assert task.error_count == 0
        assert task.last_response["data"]["task_id"] == task.task_id


# -- callback bodies ----------------------------------------------------------------------------


def test_callback_poisoned_body_is_never_decoded_or_stored(client, api, now_of, settings):
    # The view reads a callback's body only to drop it (a callback is a hint, the feed decides):
    # a poisoned body can reach neither the row nor its events.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    task = track(api, now_of)
    body = '{"task_id": "x\\u0000", "status": NaN, "video_url": 1e400, "msg": "\\ud800"}'

    response = client.post(
        reverse(
            "django_runway_feed:callback",
            kwargs={"pk": task.pk, "signature": services.callback_signature(task.pk)},
        ),
        data=body.encode(),
        content_type="application/json",
    )

    assert response.status_code == 202
    assert stored(task) == []


def test_poll_now_refused_event_write_is_reported_not_raised(api, now_of):
    refused, fine = track(api, now_of), track(api, now_of)
    events = TaskEvent._meta.db_table
    condition = f"NEW.kind = 'manual_poll' AND NEW.task_id = {refused.pk}"

    with refusing(events, "INSERT", condition):
        report = actions.poll_now([refused, fine], now=now_of())

    assert report.message() == (
        "Polled 1 task. Failed for 1 task: the database refused a write "
        f"({'IntegrityError' if connection.vendor == 'sqlite' else 'DataError'})."
    )
    assert TaskEvent.objects.filter(task=fine, kind=EventKind.MANUAL_POLL).count() == 1
