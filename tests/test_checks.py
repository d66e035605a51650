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


# -- the site around the app: served media (E022), the callback origin (E030, W030) ---------------

DOWNLOADS_ON = {"API_KEY": "k", "DOWNLOAD_RESULTS": True}


def test_check_command_fails_when_downloads_have_no_media_url(settings):
    settings.RUNWAY_FEED = DOWNLOADS_ON
    settings.MEDIA_URL = ""

    assert check_errors() == ["django_runway_feed.E022"]
    (message,) = [m for m in checks_without_databases() if m.id == "django_runway_feed.E022"]
    assert "MEDIA_URL is not set (or is the site's root)" in message.msg
    assert message.hint.startswith("Set MEDIA_URL = 'media/' and serve MEDIA_ROOT there")


@pytest.mark.parametrize(
    ("feed", "media_url", "storages"),
    [
        pytest.param({"API_KEY": "k"}, "", None, id="downloads-off"),
        pytest.param(DOWNLOADS_ON, "/media/", None, id="media-url-set"),
        pytest.param(
            DOWNLOADS_ON,
            "",
            {
                "default": {
                    "BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"base_url": "https://files.example.com/"},
                }
            },
            id="storage-has-its-own-base-url",
        ),
        pytest.param(
            DOWNLOADS_ON,
            "",
            {"default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}},
            id="not-a-file-system-storage",
        ),
    ],
)
def test_check_media_url_passes_when_files_have_a_url(settings, feed, media_url, storages):
    settings.RUNWAY_FEED = feed
    settings.MEDIA_URL = media_url
    if storages is not None:
        settings.STORAGES = {**settings.STORAGES, **storages}

    assert check_errors() == []


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("http://localhost:8766/runway-feed/", "http://localhost:8766"),
        ("https://www.example.com/app", "https://www.example.com"),
        ("https://www.example.com?x=1", "https://www.example.com"),
        ("https://", "https://www.example.com"),
        ("http://[::1", "https://www.example.com"),
    ],
)
def test_check_command_fails_on_callback_base_url_with_a_path(settings, value, origin):
    settings.RUNWAY_FEED = {"API_KEY": "k", "CALLBACK_BASE_URL": value}

    assert check_errors() == ["django_runway_feed.E030"]
    (message,) = [m for m in checks_without_databases() if m.id == "django_runway_feed.E030"]
    assert message.hint == f"Set RUNWAY_FEED['CALLBACK_BASE_URL'] = {origin!r} (no path)."


def test_check_passes_callback_base_url_with_trailing_slash(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "CALLBACK_BASE_URL": "https://www.example.com/"}

    assert check_errors() == []


def deploy_settings_output() -> str:
    """``check --deploy`` limited to the settings checks (the health ones read the database)."""
    from io import StringIO

    from django.core.management import call_command

    out, err = StringIO(), StringIO()
    call_command("check", "--deploy", "--tag", "compatibility", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    "base",
    [
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://10.1.2.3",
        "https://192.168.1.20",
        "http://172.16.0.1",
        "http://169.254.10.10",
        "http://[::1]:8000",
        "http://[fe80::1]",
        "http://mysite.local",
        "http://0.0.0.0:8000",
    ],
)
def test_check_deploy_warns_on_callback_base_url_cometapi_cannot_reach(settings, base):
    settings.RUNWAY_FEED = {"API_KEY": "k", "CALLBACK_BASE_URL": base}

    output = deploy_settings_output()

    assert "django_runway_feed.W030" in output
    assert "CometAPI can never reach" in output
    assert check_errors() == []  # a warning, and only with --deploy
    assert "W030" not in str([m.id for m in checks_without_databases()])


def test_check_deploy_accepts_a_public_callback_base_url(settings):
    settings.RUNWAY_FEED = {"API_KEY": "k", "CALLBACK_BASE_URL": "https://www.example.com"}

    assert "django_runway_feed" not in deploy_settings_output()


def test_example_site_check_deploy_reports_no_site_check(tmp_path):
    # The example site (make serve's environment: the fake CometAPI on loopback, downloads on)
    # must stay clean of this app's settings checks under --deploy.
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "COMETAPI_KEY": "dev-key",
        "COMETAPI_BASE_URL": "http://127.0.0.1:8765",
        "RUNWAY_DOWNLOAD_FROM_FAKE": "1",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--tag", "compatibility"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "django_runway_feed" not in done.stdout + done.stderr
