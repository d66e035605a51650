from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.checks import CheckMessage
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from django_runway_feed import health
from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.schedules import remove_schedule
from django_runway_feed.statuses import Status
from tests.system_checks import checks_without_databases

PREFIX = "django_runway_feed."


def health_ids(*, deploy: bool = True) -> list[str]:
    messages = checks_without_databases(deploy=deploy)
    return sorted(m.id for m in messages if m.id and m.id.startswith(PREFIX))


def messages_with(code: str) -> list[CheckMessage]:
    """The deploy-check messages with id ``django_runway_feed.<code>``."""
    return [m for m in checks_without_databases(deploy=True) if m.id == f"{PREFIX}{code}"]


def make_task(*, status=Status.QUEUED, age=dt.timedelta(0), now=None, **fields):
    now = now or timezone.now()
    return RunwayTask.objects.create(
        route="tracked",
        status=status,
        created_at=now - age,
        submitted_at=fields.pop("submitted_at", now - age),
        next_poll_at=fields.pop("next_poll_at", now + dt.timedelta(seconds=5)),
        **fields,
    )


# -- the stuck queryset ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_stuck_selects_unfinished_tasks_older_than_threshold(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    old_running = make_task(status=Status.RUNNING, age=dt.timedelta(seconds=601), now=now)
    old_submitting = make_task(
        status=Status.SUBMITTING, age=dt.timedelta(hours=1), submitted_at=None, now=now
    )
    make_task(status=Status.QUEUED, age=dt.timedelta(seconds=599), now=now)
    make_task(status=Status.SUCCEEDED, age=dt.timedelta(hours=2), now=now)

    stuck = set(RunwayTask.objects.stuck(now).values_list("pk", flat=True))

    assert stuck == {old_running.pk, old_submitting.pk}


@pytest.mark.django_db
def test_stuck_accepts_explicit_threshold():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    task = make_task(age=dt.timedelta(minutes=10), now=now)

    assert list(RunwayTask.objects.stuck(now, after=dt.timedelta(minutes=5))) == [task]
    assert list(RunwayTask.objects.stuck(now, after=900)) == []


# -- checks: silent when healthy -----------------------------------------------------------------


@pytest.mark.django_db
def test_health_checks_silent_when_healthy(healthy):
    make_task(age=dt.timedelta(minutes=1))

    assert health_ids() == []


@pytest.mark.django_db
def test_health_checks_do_not_run_without_deploy(healthy):
    remove_schedule()
    PollerState.objects.filter(pk=1).update(
        paused_until=timezone.now() + dt.timedelta(minutes=5), pause_reason="401"
    )

    assert health_ids(deploy=False) == []


@pytest.mark.django_db
def test_check_deploy_command_reports_missing_schedule(healthy, capsys):
    from django.core.management.base import SystemCheckError

    remove_schedule()

    with pytest.raises(SystemCheckError, match=r"Run manage.py runway_schedule"):
        call_command("check", "--deploy")


def deploy_check_output(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("check", "--deploy", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize("args", [(), ("--database", "default")], ids=["plain", "database"])
def test_check_deploy_command_prints_the_health_warnings(healthy, settings, args):
    # Django 6.1 leaves checks tagged "database" out of a plain `check --deploy`; ours must be
    # there on every supported Django, and only once when --database is given too.
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    Schedule.objects.create(
        name="django_runway_feed.poll",
        func="django_runway_feed.jobs.poll_due_tasks",
        schedule_type=Schedule.MINUTES,
        minutes=1,
        repeats=-1,
    )
    make_task(status=Status.RUNNING, age=dt.timedelta(minutes=11))

    output = deploy_check_output(*args)

    assert output.count(f"{PREFIX}W004") == 1
    assert output.count(f"{PREFIX}W007") == 1
    assert "1 unfinished task(s) were submitted more than 600 s ago" in output


@pytest.mark.django_db
def test_check_without_deploy_reads_no_task_tables(healthy, django_assert_num_queries):
    remove_schedule()

    with django_assert_num_queries(0):
        output = io.StringIO()
        call_command("check", stdout=output, stderr=output)

    assert f"{PREFIX}E007" not in output.getvalue()


# -- the Schedule ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_schedule_is_e007(healthy):
    remove_schedule()

    messages = messages_with("E007")
    assert health_ids() == [f"{PREFIX}E007"]
    assert messages[0].msg == (
        "The django-q2 Schedule 'django_runway_feed.poll' is missing: nothing polls Runway tasks."
    )


@pytest.mark.django_db
def test_missing_schedule_ignored_when_auto_schedule_off(healthy, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "AUTO_SCHEDULE": False}
    remove_schedule()

    assert health_ids() == []


@pytest.mark.django_db
def test_duplicated_schedule_is_w004(healthy):
    Schedule.objects.create(
        name="django_runway_feed.poll",
        func="django_runway_feed.jobs.poll_due_tasks",
        schedule_type=Schedule.MINUTES,
        minutes=1,
        repeats=-1,
    )

    assert health_ids() == [f"{PREFIX}W004"]


@pytest.mark.django_db
def test_schedule_with_wrong_function_is_e008(healthy):
    Schedule.objects.filter(name="django_runway_feed.poll").update(func="myapp.jobs.poll")

    messages = messages_with("E008")
    assert health_ids() == [f"{PREFIX}E008"]
    assert messages[0].msg == (
        "The django-q2 Schedule 'django_runway_feed.poll' calls 'myapp.jobs.poll' instead of "
        "'django_runway_feed.jobs.poll_due_tasks'."
    )


@pytest.mark.django_db
def test_schedule_without_repeats_is_e008(healthy):
    Schedule.objects.filter(name="django_runway_feed.poll").update(repeats=0)

    assert health_ids() == [f"{PREFIX}E008"]


# -- the cluster ---------------------------------------------------------------------------------


def test_catch_up_on_is_w005_without_deploy(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "catch_up": True}

    assert health_ids(deploy=False) == [f"{PREFIX}W005"]


def test_catch_up_missing_counts_as_on(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k != "catch_up"}

    assert health_ids(deploy=False) == [f"{PREFIX}W005"]


@pytest.mark.django_db
def test_sqlite_orm_broker_with_several_workers_is_w006(healthy, settings):
    with pytest.warns(UserWarning, match="DATABASES"):
        settings.DATABASES = {
            **settings.DATABASES,
            "queue": {"ENGINE": "django.db.backends.sqlite3", "NAME": "queue.sqlite3"},
        }
    settings.Q_CLUSTER = {
        k: v for k, v in settings.Q_CLUSTER.items() if k not in ("redis", "orm", "workers")
    }
    settings.Q_CLUSTER.update(orm="queue", workers=4)

    messages = messages_with("W006")
    assert health_ids() == [f"{PREFIX}W006"]
    assert messages[0].msg == (
        "The django-q2 ORM broker runs on SQLite with 4 workers: it works, but concurrent "
        "writers wait for each other and may log 'database is locked'."
    )


@pytest.mark.django_db
def test_sqlite_orm_broker_with_one_worker_is_silent(healthy, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "orm": "default", "workers": 1}
    settings.Q_CLUSTER.pop("redis", None)

    assert health_ids() == []


# -- heartbeat, pause, stuck ---------------------------------------------------------------------


@pytest.mark.django_db
def test_old_heartbeat_with_long_due_task_is_e009(healthy):
    now = timezone.now()
    PollerState.objects.filter(pk=1).update(last_success_at=now - dt.timedelta(seconds=900))
    make_task(age=dt.timedelta(minutes=20), next_poll_at=now - dt.timedelta(minutes=10))

    messages = health.check_heartbeat(now=now)

    assert health_ids() == [f"{PREFIX}E009"]
    assert [m.msg for m in messages] == [
        "No successful poll run for 900 s (RUNWAY_FEED['HEARTBEAT_MAX_AGE'] is 300 s) "
        "while tasks are due."
    ]


@pytest.mark.django_db
def test_never_polled_with_long_due_task_is_e009(healthy):
    now = timezone.now()
    PollerState.objects.filter(pk=1).update(last_success_at=None)
    make_task(age=dt.timedelta(minutes=20), next_poll_at=now - dt.timedelta(minutes=10))

    messages = health.check_heartbeat(now=now)

    assert [m.msg for m in messages] == [
        "No poll run has succeeded yet, and tasks have been due for more than 300 s "
        "(RUNWAY_FEED['HEARTBEAT_MAX_AGE'])."
    ]


@pytest.mark.django_db
def test_old_heartbeat_is_silent_while_no_task_waits(healthy):
    now = timezone.now()
    PollerState.objects.filter(pk=1).update(last_success_at=now - dt.timedelta(hours=2))
    make_task(status=Status.SUCCEEDED, next_poll_at=None)
    make_task(age=dt.timedelta(seconds=30), next_poll_at=now - dt.timedelta(seconds=20))

    assert health.check_heartbeat(now=now) == []
    assert health_ids() == []


@pytest.mark.django_db
def test_heartbeat_threshold_is_a_setting(healthy, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "HEARTBEAT_MAX_AGE": 3600}
    now = timezone.now()
    PollerState.objects.filter(pk=1).update(last_success_at=now - dt.timedelta(seconds=900))
    make_task(next_poll_at=now - dt.timedelta(minutes=10))

    assert health.check_heartbeat(now=now) == []


@pytest.mark.django_db
def test_api_pause_is_e010(healthy):
    until = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
    PollerState.objects.filter(pk=1).update(
        paused_until=until, pause_reason="CometAPI refused the API key (HTTP 401)"
    )

    messages = messages_with("E010")
    assert health_ids() == [f"{PREFIX}E010"]
    assert messages[0].msg == (
        "CometAPI refused the API key; polling is paused until 2999-01-01T00:00:00+00:00: "
        "CometAPI refused the API key (HTTP 401)"
    )


@pytest.mark.django_db
def test_expired_pause_is_silent(healthy):
    PollerState.objects.filter(pk=1).update(
        paused_until=timezone.now() - dt.timedelta(seconds=1), pause_reason="401"
    )

    assert health_ids() == []


@pytest.mark.django_db
def test_stuck_tasks_are_w007(healthy, settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "STALE_AFTER": 600}
    make_task(status=Status.RUNNING, age=dt.timedelta(minutes=11))
    make_task(status=Status.RUNNING, age=dt.timedelta(minutes=11))
    make_task(status=Status.RUNNING, age=dt.timedelta(minutes=9))

    messages = messages_with("W007")
    assert health_ids() == [f"{PREFIX}W007"]
    assert messages[0].msg == (
        "2 unfinished task(s) were submitted more than 600 s ago (RUNWAY_FEED['STALE_AFTER'])."
    )


@pytest.mark.parametrize("key", ["STALE_AFTER", "HEARTBEAT_MAX_AGE"])
def test_new_duration_settings_are_validated(settings, key):
    settings.RUNWAY_FEED = {"API_KEY": "k", key: "soon"}

    messages = [m for m in checks_without_databases() if m.id == f"{PREFIX}E002"]
    assert [m.msg for m in messages] == [
        f"RUNWAY_FEED['{key}'] must be a positive number of seconds or a timedelta."
    ]


# -- task_stale ----------------------------------------------------------------------------------
