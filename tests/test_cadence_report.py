"""What runway_status and the admin show of the cadence's memory: whether callbacks arrive,
and the run times learned per profile (docs/polling.md, "How the cadence uses callbacks and
history")."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_runway_feed.history import RUN_TIME_ROWS
from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_runway_feed/runwaytask/"
LIVE = f"{CHANGELIST}live/?ids=&summary=1"
CALLBACKS_ON = {"API_KEY": "k", "CALLBACK_BASE_URL": "https://www.example.com"}
_ids = itertools.count()


def finishes(
    announced: Sequence[bool], *, now: dt.datetime, status: str = Status.SUCCEEDED
) -> None:
    """Settled finishes of tasks created with a callback URL, newest first, a minute apart
    (the newest a minute ago); ``announced`` says for each whether its callback came."""
    for position, came in enumerate(announced):
        finished_at = now - dt.timedelta(minutes=1 + position)
        RunwayTask.objects.create(
            task_id=f"evidence-{next(_ids)}",
            route="generate",
            status=status,
            expects_callback=True,
            started_at=finished_at - dt.timedelta(seconds=40),
            finished_at=finished_at,
            callback_at=finished_at + dt.timedelta(seconds=2) if came else None,
        )


def successes(durations: Sequence[float], *, model: str = "gen4_turbo", seconds: int = 10) -> None:
    now = timezone.now()
    for position, duration in enumerate(durations):
        finished_at = now - dt.timedelta(minutes=1 + position)
        RunwayTask.objects.create(
            task_id=f"run-{next(_ids)}",
            route="generate",
            request={"model": model, "options": {"seconds": seconds}},
            status=Status.SUCCEEDED,
            started_at=finished_at - dt.timedelta(seconds=duration),
            finished_at=finished_at,
        )


def status_text() -> str:
    out = StringIO()
    call_command("runway_status", stdout=out)
    return out.getvalue()


def status_json() -> dict[str, Any]:
    out = StringIO()
    call_command("runway_status", "--json", stdout=out)
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


# -- runway_status: callbacks ------------------------------------------------------------------


def test_status_callbacks_arriving_shows_the_counts_and_the_last_callback(settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    now = timezone.now()
    finishes([True] * 9 + [False] + [True] * 9 + [False], now=now)
    newest = (
        RunwayTask.objects.filter(callback_at__isnull=False)
        .order_by("-callback_at")
        .values_list("callback_at", flat=True)[0]
    )

    report = status_json()["callbacks"]
    text = status_text()

    assert report == {
        "state": "arriving",
        "announced": 18,
        "missed": 2,
        "last_callback_at": newest.isoformat(),
        "callback_base_url_set": True,
        "trust_callbacks": True,
    }
    assert (
        f"Callbacks: arriving (18 of the latest 20 finishes announced; last at "
        f"{newest.isoformat()}): tasks that expect one are polled only as a safety net\n"
    ) in text


def test_status_callbacks_missing_says_polling_is_back_to_the_usual_cadence(settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    finishes([False, False, False, False, True], now=timezone.now())

    report = status_json()["callbacks"]

    assert (report["state"], report["announced"], report["missed"]) == ("missing", 1, 4)
    assert "Callbacks: missing (4 of the latest 5 finishes came without one; last at " in (
        status_text()
    )


def test_status_callbacks_none_arrived_points_at_the_callback_url(settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    finishes([False, False, False], now=timezone.now())

    text = status_text()

    assert status_json()["callbacks"]["state"] == "missing"
    assert (
        "Callbacks: missing (none of the latest 3 finishes came with one): polling at the usual "
        "cadence; check that CometAPI can reach RUNWAY_FEED['CALLBACK_BASE_URL'] "
        "(docs/troubleshooting.md)\n"
    ) in text


def test_status_callbacks_failures_without_a_callback_are_no_evidence(settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    finishes([False, False, False], now=timezone.now(), status=Status.FAILED)

    report = status_json()["callbacks"]

    assert (report["state"], report["announced"], report["missed"]) == ("waiting", 0, 0)
    assert report["last_callback_at"] is None
    assert (
        "Callbacks: waiting for the first finishes (0 announced so far): polling at the usual "
        "cadence\n"
    ) in status_text()


def test_status_callbacks_off_without_a_callback_base_url(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    finishes([True] * 5, now=timezone.now())

    report = status_json()["callbacks"]

    assert (report["state"], report["announced"], report["callback_base_url_set"]) == (
        "off",
        0,
        False,
    )
    assert "Callbacks: off (CALLBACK_BASE_URL is not set)\n" in status_text()


def test_status_callbacks_off_when_not_trusted(settings):
    settings.RUNWAY_FEED = {**CALLBACKS_ON, "TRUST_CALLBACKS": False}
    finishes([True] * 5, now=timezone.now())

    report = status_json()["callbacks"]

    assert (report["state"], report["trust_callbacks"]) == ("off", False)
    assert (
        "Callbacks: off (TRUST_CALLBACKS is False): polling at the usual cadence\n" in status_text()
    )


# -- runway_status: run times ------------------------------------------------------------------


def test_status_run_times_show_the_quantiles_per_profile(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    successes([30 + 2 * n for n in range(25)])  # 30, 32, ... 78 s
    successes([5.0] * 19, model="gen4_turbo", seconds=5)  # one short of learning anything

    report = status_json()

    assert report["learn_run_times"] is True
    # Quantiles of 25 values (inclusive method): the 2nd percentile falls 0.48 of the way
    # from the 1st to the 2nd value, the 98th 0.52 of the way from the 24th to the 25th.
    assert report["run_times"] == {
        "generate/gen4_turbo/10": {"samples": 25, "low": 31.0, "median": 54.0, "high": 77.0}
    }
    text = status_text()
    assert "Run times (low / median / high):\n" in text
    assert "  generate/gen4_turbo/10: 31 s / 54 s / 77 s from 25 successes\n" in text
    assert "gen4_turbo/5" not in text


def test_status_run_times_none_learned_yet(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    successes([60.0] * 19)

    assert status_json()["run_times"] == {}
    assert "Run times: none learned yet\n" in status_text()


def test_status_run_times_off(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "LEARN_RUN_TIMES": False}
    successes([60.0] * 25)

    report = status_json()

    assert (report["run_times"], report["learn_run_times"]) == ({}, False)
    assert "Run times: off (LEARN_RUN_TIMES is False)\n" in status_text()


# -- the admin ---------------------------------------------------------------------------------


def changelist(client: Client) -> str:
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_admin_summary_callbacks_arriving(admin_client, settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    finishes([True] * 5 + [False], now=timezone.now())

    assert (
        "Callbacks: arriving (5 of the latest 6 finishes announced). Tasks that expect one are "
        "polled only as a safety net."
    ) in changelist(admin_client)


def test_admin_summary_callbacks_missing_is_announced_as_a_status(admin_client, settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    finishes([False] * 4 + [True] * 2, now=timezone.now())

    page = changelist(admin_client)

    assert (
        '<p class="rf-summary__callbacks" role="status"> Callbacks: missing (4 of the latest 6 '
        "finishes came without one). Polling at the usual cadence. </p>"
    ) in page


def test_admin_summary_callbacks_in_german_with_plurals(admin_client, settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    settings.LANGUAGE_CODE = "de"
    finishes([True] * 3, now=timezone.now())

    assert (
        "Callbacks: kommen an (3 von 3 jüngsten Abschlüssen gemeldet). Aufgaben, die einen "
        "erwarten, werden nur zur Absicherung abgefragt."
    ) in changelist(admin_client)


def test_admin_summary_callbacks_not_trusted(admin_client, settings):
    settings.RUNWAY_FEED = {**CALLBACKS_ON, "TRUST_CALLBACKS": False}

    assert "Callbacks: off (TRUST_CALLBACKS is False). Polling at the usual cadence." in (
        changelist(admin_client)
    )


def test_admin_summary_has_no_callbacks_line_without_a_callback_base_url(admin_client, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    finishes([True] * 5, now=timezone.now())

    assert "rf-summary__callbacks" not in changelist(admin_client)


def queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_admin_summary_callbacks_cost_one_query_only_while_enabled(admin_client, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    without = queries(admin_client, CHANGELIST)
    settings.RUNWAY_FEED = {**CALLBACKS_ON, "TRUST_CALLBACKS": False}
    untrusted = queries(admin_client, CHANGELIST)
    settings.RUNWAY_FEED = CALLBACKS_ON
    with_callbacks = queries(admin_client, CHANGELIST)

    assert untrusted == without
    assert with_callbacks == without + 1


def test_admin_live_summary_never_reads_the_callbacks(admin_client, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    without = queries(admin_client, LIVE)
    settings.RUNWAY_FEED = CALLBACKS_ON

    assert queries(admin_client, LIVE) == without


def test_admin_changelist_reads_no_run_times(admin_client, settings):
    settings.RUNWAY_FEED = CALLBACKS_ON
    successes([60.0] * 25)

    with CaptureQueriesContext(connection) as captured:
        admin_client.get(CHANGELIST)

    # Only runway_status shows run times: their read (the newest successes) is not made here.
    reads = [q["sql"] for q in captured.captured_queries]
    assert not [sql for sql in reads if f"LIMIT {RUN_TIME_ROWS}" in sql]


def test_admin_task_page_shows_the_callback_fields_read_only(admin_client):
    received = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    task = RunwayTask.objects.create(
        task_id="called-back",
        route="generate",
        status=Status.SUCCEEDED,
        expects_callback=True,
        callback_at=received,
    )

    response = admin_client.get(f"{CHANGELIST}{task.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Expects a callback" in html
    assert "Callback received" in html
    assert "2030-01-02 03:04:05" in html
    assert 'name="expects_callback"' not in html  # shown, not editable
