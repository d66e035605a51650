from __future__ import annotations

import datetime as dt
import re
import sys

import pytest
from django.test import override_settings

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
        ("TRUST_CALLBACKS", 1),
        ("LEARN_RUN_TIMES", "no"),
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


# -- django-q2 wiring: each mistake stops `manage.py check` ---------------------------------------


def check_errors(capsys=None):
    """Run ``manage.py check`` and return the ids of this app's errors it stopped on."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    try:
        call_command("check", databases=[])
    except SystemCheckError as exc:
        return sorted(set(re.findall(r"django_runway_feed\.E\d+", str(exc))))
    return []


def without_django_q():
    from django.conf import settings

    return [app for app in settings.INSTALLED_APPS if app != "django_q"]


def test_check_command_fails_without_django_q_app():
    with override_settings(INSTALLED_APPS=without_django_q()):
        assert check_errors() == ["django_runway_feed.E011"]


def test_check_command_passes_without_django_q_when_auto_schedule_off(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "AUTO_SCHEDULE": False}

    with override_settings(INSTALLED_APPS=without_django_q()):
        assert check_errors() == []


def test_check_command_fails_without_q_cluster(settings):
    del settings.Q_CLUSTER

    assert check_errors() == ["django_runway_feed.E012"]


def test_check_wiring_errors_share_one_hint(settings):
    del settings.Q_CLUSTER
    missing_cluster = [m for m in checks_without_databases() if m.id == "django_runway_feed.E012"]
    with override_settings(INSTALLED_APPS=without_django_q()):
        missing_app = [m for m in checks_without_databases() if m.id == "django_runway_feed.E011"]

    assert missing_cluster[0].hint == missing_app[0].hint
    assert "Add 'django_q' to INSTALLED_APPS and set Q_CLUSTER" in missing_app[0].hint


def test_check_command_fails_when_redis_broker_cannot_be_imported(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # find_spec raises: "not importable"
    settings.Q_CLUSTER = {
        k: v for k, v in settings.Q_CLUSTER.items() if k not in ("orm", "redis")
    } | {"redis": "redis://127.0.0.1:6379/0"}

    messages = [m for m in checks_without_databases() if m.id == "django_runway_feed.E013"]
    assert check_errors() == ["django_runway_feed.E013"]
    assert messages[0].hint == (
        "Install it (pip install redis) or use the ORM broker: Q_CLUSTER['orm'] = 'default'."
    )


def test_check_command_fails_when_default_broker_is_redis_without_package(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k not in ("orm", "redis")}

    assert check_errors() == ["django_runway_feed.E013"]


def test_check_command_passes_with_orm_broker(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    settings.Q_CLUSTER = {
        k: v for k, v in settings.Q_CLUSTER.items() if k not in ("orm", "redis")
    } | {"orm": "default"}

    assert check_errors() == []


def test_check_command_fails_when_timeout_does_not_fit_poll_run(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60, "retry": 180}

    assert check_errors() == ["django_runway_feed.E005"]


def test_check_cluster_timeout_and_retry_hints_agree(settings):
    # timeout 60 with django-q2's default retry (60): both are wrong, and one fix cures both.
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k != "retry"}
    settings.Q_CLUSTER["timeout"] = 60

    messages = {
        m.id: m
        for m in checks_without_databases()
        if m.id in ("django_runway_feed.E005", "django_runway_feed.E006")
    }
    assert sorted(messages) == ["django_runway_feed.E005", "django_runway_feed.E006"]
    assert messages["django_runway_feed.E005"].hint == messages["django_runway_feed.E006"].hint
    assert "(85 s)" in messages["django_runway_feed.E006"].msg
    assert messages["django_runway_feed.E006"].hint == (
        "Set Q_CLUSTER['timeout'] to at least 85 and Q_CLUSTER['retry'] above it "
        "(for example 145), or lower RUNWAY_FEED['POLL_WINDOW']."
    )


def test_check_cluster_hint_followed_passes(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k"}
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 85, "retry": 145}

    assert check_errors() == []
