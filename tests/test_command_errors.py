"""Commands fail with a clean CommandError, accept Django's options after a subcommand, and
describe every argument in --help."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from tests.processes import ROOT

COMMANDS = sorted(name for name, app in get_commands().items() if app == "django_runway_feed")


def parser_of(name):
    return load_command_class("django_runway_feed", name).create_parser("manage.py", name)


def subparsers_of(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_runway_schedule_without_django_q_is_a_command_error():
    apps_without_q = [app for app in settings.INSTALLED_APPS if app != "django_q"]

    with (
        override_settings(INSTALLED_APPS=apps_without_q),
        pytest.raises(CommandError, match=r"'django_q' is not in INSTALLED_APPS"),
    ):
        call_command("runway_schedule")


@pytest.mark.django_db
def test_runway_schedule_before_migrate_is_a_command_error():
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("DROP TABLE django_q_schedule")

    with pytest.raises(CommandError, match=r"Run manage.py migrate first"):
        call_command("runway_schedule")


def test_runway_submit_accepts_django_options_after_subcommand():
    options = parser_of("runway_submit").parse_args(
        ["generate", "--prompt", "x", "--settings", "tests.settings", "-v", "2"]
    )

    assert options.settings == "tests.settings"
    assert options.verbosity == 2


def test_runway_submit_keeps_django_defaults_when_not_repeated():
    options = parser_of("runway_submit").parse_args(["-v", "0", "generate", "--prompt", "x"])

    assert options.verbosity == 0


def test_runway_submit_seconds_choices_are_five_and_ten():
    (generate,) = [p for name, p in subparsers_of(parser_of("runway_submit")) if name == "generate"]
    seconds = next(a for a in generate._actions if a.dest == "seconds")

    assert seconds.choices == [5, 10]


@pytest.mark.parametrize("name", COMMANDS)
def test_command_arguments_all_have_help(name):
    parser = parser_of(name)
    parsers = [(name, parser), *subparsers_of(parser)]

    missing = [
        f"{where} {action.option_strings or action.dest}"
        for where, sub in parsers
        for action in sub._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_runway_fakeapi_starts_whatever_the_settings():
    command = load_command_class("django_runway_feed", "runway_fakeapi")

    assert command.requires_system_checks == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "argv",
    [
        ["runway_status"],
        ["runway_prune", "--days", "30"],
        ["runway_track", "3d957031-aaaa-bbbb-cccc-1234567890ab"],
    ],
)
def test_commands_before_migrate_are_command_errors(argv):
    from django_runway_feed.models import RunwayTask, TaskEvent

    cascade = " CASCADE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        for model in (TaskEvent, RunwayTask):
            cursor.execute(f"DROP TABLE {model._meta.db_table}{cascade}")

    with pytest.raises(CommandError, match=r"Run manage.py migrate first"):
        call_command(*argv)


# -- bad numbers on the command line: a usage error, never a traceback -------------------------


def run_manage(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", *argv],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["runway_prune", "--days", "nan"],
            "argument --days: expected a number above 0 to 36500, got 'nan'",
        ),
        (
            ["runway_prune", "--days", "999999999999"],
            "argument --days: expected a number above 0 to 36500, got '999999999999'",
        ),
        (
            ["runway_poll", "--window", "nan"],
            "argument --window: expected a number from 0 to 86400, got 'nan'",
        ),
        (
            ["runway_submit", "generate", "--prompt", "x", "--metadata", '{"a": 1'],
            "argument --metadata: not valid JSON: Expecting ',' delimiter",
        ),
        (
            ["runway_submit", "generate", "--prompt", "x", "--motion-vector", "x=inf,y"],
            "argument --motion-vector: 'y' is not KEY=NUMBER",
        ),
        (
            ["runway_submit", "generate", "--prompt", "x", "--wait", "--timeout", "inf"],
            "argument --timeout: expected a number above 0 to 604800, got 'inf'",
        ),
    ],
)
def test_bad_number_on_the_command_line_is_a_usage_error(argv, message):
    result = run_manage(*argv)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runway_prune", "--days", "inf"], "expected a number above 0 to 36500, got 'inf'"),
        (["runway_prune", "--days", "-1"], "expected a number above 0 to 36500, got '-1'"),
        (["runway_prune", "--batch-size", "0"], "expected a whole number from 1 to 100000"),
        (["runway_poll", "--window", "1e9"], "expected a number from 0 to 86400, got '1e9'"),
        (["runway_fakeapi", "--port", "70000"], "expected a whole number from 0 to 65535"),
        (["runway_fakeapi", "--latency", "nan"], "expected a number from 0 to 3600, got 'nan'"),
    ],
)
def test_bad_number_through_call_command_is_a_command_error(argv, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command(*argv)
