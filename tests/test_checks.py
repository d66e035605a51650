from __future__ import annotations

import datetime as dt

import pytest

from tests.system_checks import checks_without_databases


def ids(settings_dict=None):
    return sorted(
        m.id for m in checks_without_databases() if m.id and m.id.startswith("django_runway_feed")
    )


def test_checks_pass_with_valid_settings(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "TASK_TIMEOUT": dt.timedelta(hours=2)}

    assert ids() == []


def test_checks_warn_on_missing_api_key(settings):
    settings.RUNWAY_FEED = {}

    assert ids() == ["django_runway_feed.W002"]


def test_checks_warn_on_unknown_key_with_suggestion(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "POLL_INTERVALL": 5}

    messages = [m for m in checks_without_databases() if m.id == "django_runway_feed.W001"]
    assert len(messages) == 1
    assert messages[0].hint == "Did you mean RUNWAY_FEED['POLL_INTERVAL']?"


def test_checks_reject_non_dict(settings):
    settings.RUNWAY_FEED = "nope"

    assert ids() == ["django_runway_feed.E001"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("POLL_INTERVAL", "5"),
        ("BATCH_SIZE", 0),
        ("CONCURRENCY", True),
        ("BASE_URL", "ftp://x"),
        ("REQUEST_TIMEOUT", (5,)),
        ("AUTO_SCHEDULE", "yes"),
        ("TASK_TIMEOUT", -1),
    ],
)
def test_checks_reject_wrong_types(settings, key, value):
    settings.RUNWAY_FEED = {"API_KEY": "k", key: value}

    messages = [m for m in checks_without_databases() if m.id == "django_runway_feed.E002"]
    assert [m.msg.split(" must ")[0] for m in messages] == [f"RUNWAY_FEED['{key}']"]


def test_checks_max_interval_below_interval(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "POLL_INTERVAL": 30, "MAX_POLL_INTERVAL": 10}

    assert ids() == ["django_runway_feed.E003"]


def test_checks_warn_on_poll_interval_below_five(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "POLL_INTERVAL": 2}

    assert ids() == ["django_runway_feed.W003"]


def test_checks_lease_shorter_than_request(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "LEASE_SECONDS": 30, "REQUEST_TIMEOUT": (5, 30)}

    assert ids() == ["django_runway_feed.E004"]


def test_checks_cluster_timeout_shorter_than_poll_window(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "POLL_WINDOW": 50}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60, "retry": 90}

    assert ids() == ["django_runway_feed.E005"]


def test_checks_cluster_retry_not_above_timeout(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 120, "retry": 120}

    assert ids() == ["django_runway_feed.E006"]


def test_check_command_reports_hint(settings, capsys):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.RUNWAY_FEED = {"API_KEY": "k", "POLL_INTERVAL": 30, "MAX_POLL_INTERVAL": 10}

    with pytest.raises(SystemCheckError, match=r"Make RUNWAY_FEED\['MAX_POLL_INTERVAL'\]"):
        call_command("check", databases=[])
