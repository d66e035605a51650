"""What every command of the app shares: errors end as a clean CommandError, never a traceback,
and Django's own options (``--settings`` ...) also work after a subcommand."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from django_runway_feed.exceptions import RunwayFeedError

MIGRATE_HINT = "Run manage.py migrate first if the tables are missing."


class RunwayCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except CommandError:
            raise
        except RunwayFeedError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"Database error: {exc}. {MIGRATE_HINT}") from exc


def add_django_options(parser: CommandParser) -> None:
    """Repeat Django's common options on a subcommand's parser.

    ``SUPPRESS`` keeps an option the user did not repeat from overwriting the main parser's value.
    """
    keep = argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=keep,
        help="Verbosity level; 0=minimal output, 1=normal output, 2=verbose "
        "output, 3=very verbose output.",
    )
    parser.add_argument(
        "--settings", default=keep, help="A settings module path, e.g. 'myproject.settings'."
    )
    parser.add_argument("--pythonpath", default=keep, help="A directory to add to the Python path.")
    parser.add_argument(
        "--traceback", action="store_true", default=keep, help="Raise on CommandError exceptions."
    )
    parser.add_argument(
        "--no-color", action="store_true", default=keep, help="Don't colorize the command output."
    )
    parser.add_argument(
        "--force-color",
        action="store_true",
        default=keep,
        help="Force colorization of the command output.",
    )
    parser.add_argument(
        "--skip-checks", action="store_true", default=keep, help="Skip system checks."
    )


def number_between(
    low: float, high: float, *, whole: bool = False, above_low: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite number in [low, high] (or (low, high]).

    It raises ``ArgumentTypeError``, which argparse turns into a usage error: a clean message
    (and exit status 2) on the command line, a ``CommandError`` through ``call_command``.
    ``nan``, ``inf`` and absurd values never reach the command.
    """
    lowest = f"above {low:g}" if above_low else f"from {low:g}"
    expected = f"{'a whole number' if whole else 'a number'} {lowest} to {high:g}"

    def parse(text: str) -> float:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None
        too_low = value <= low if above_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}")
        return value

    return parse
