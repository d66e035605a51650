"""Is polling healthy? The operational checks and the status report, read only.

Used by the system checks (``manage.py check --deploy``) and by ``runway_status`` (text,
``--json`` and ``--check``). Nothing here changes data: the chores after a poll run (marking
stuck tasks, pruning, queuing downloads) are in :mod:`django_runway_feed.maintenance`.
Everything that reads the clock takes ``now=`` so callers and tests control time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import ERROR, CheckMessage, Error, Warning
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Count, Max, Q
from django.utils import timezone

from .conf import conf, q_cluster
from .counting import count_up_to, estimated_value_counts
from .gateway import GatewayHealth
from .gateway import describe as describe_gateway
from .history import read_callback_verdict, read_run_times
from .models import EventKind, PollerState, RunwayTask, TaskEvent
from .pause import active_pause, pause_in_effect
from .schedules import POLL_FUNC
from .settings_checks import check_settings
from .site_checks import check_callback_reachable
from .statuses import TERMINAL_STATUSES, UNFINISHED_STATUSES, Status

logger = logging.getLogger(__name__)

ID = "django_runway_feed"
# Bumped only if a key of the --json report changes meaning or disappears; new keys may be added.
REPORT_VERSION = 1
# The status report counts a finished status exactly up to this many tasks (see status_counts).
EXACT_COUNT_LIMIT = 10_000


# -- configuration checks (no database) ----------------------------------------------------------


def _cluster() -> dict[str, Any] | None:
    cluster = q_cluster()
    if cluster is None or cluster.get("sync"):
        return None
    return cluster


def check_catch_up() -> list[CheckMessage]:
    """W005: django-q2 replays every missed run after downtime when ``catch_up`` is on."""
    cluster = _cluster()
    # django-q2's own default for catch_up is True, so a missing key counts as on.
    if cluster is None or not cluster.get("catch_up", True):
        return []
    return [
        Warning(
            "Q_CLUSTER['catch_up'] is on: after downtime django-q2 starts every missed "
            "once-a-minute poll run at once.",
            hint="Set Q_CLUSTER['catch_up'] = False; the next run polls everything that is due.",
            id=f"{ID}.W005",
        )
    ]


def check_sqlite_workers() -> list[CheckMessage]:
    """W006: the ORM broker on SQLite with several workers works, but writers queue up."""
    cluster = _cluster()
    if cluster is None or "orm" not in cluster:
        return []
    alias = str(cluster["orm"])
    engine = str(settings.DATABASES.get(alias, {}).get("ENGINE", ""))
    workers = cluster.get("workers")
    if workers is None:
        import multiprocessing

        workers = multiprocessing.cpu_count()  # django-q2's default
    if "sqlite3" not in engine or not isinstance(workers, int) or workers <= 1:
        return []
    return [
        Warning(
            f"The django-q2 ORM broker runs on SQLite with {workers} workers: it works, but "
            "concurrent writers wait for each other and may log 'database is locked'.",
            hint="Use PostgreSQL (or the Redis broker) in production, or set "
            "Q_CLUSTER['workers'] = 1.",
            id=f"{ID}.W006",
        )
    ]


# -- state checks (read the database) -------------------------------------------------------------


def _tables_exist(using: str, *models: Any) -> bool:
    tables = set(connections[using].introspection.table_names())
    return all(model._meta.db_table in tables for model in models)


def check_schedule(*, using: str = DEFAULT_DB_ALIAS) -> list[CheckMessage]:
    """E007 missing, E008 wrong function or not repeating, W004 duplicated Schedule rows."""
    if not apps.is_installed("django_q"):
        return []
    from django_q.models import Schedule

    if not _tables_exist(using, Schedule):
        return []
    name = conf.SCHEDULE_NAME
    rows = list(
        Schedule.objects.using(using).filter(name=name).order_by("pk").values("func", "repeats")
    )
    messages: list[CheckMessage] = []
    if not rows:
        # With AUTO_SCHEDULE off the site may poll another way (runway_poll --loop); the
        # heartbeat check still catches a site where nothing polls.
        if conf.AUTO_SCHEDULE:
            messages.append(
                Error(
                    f"The django-q2 Schedule {name!r} is missing: nothing polls Runway tasks.",
                    hint="Run manage.py runway_schedule (or manage.py migrate) to install it.",
                    id=f"{ID}.E007",
                )
            )
        return messages
    if len(rows) > 1:
        messages.append(
            Warning(
                f"There are {len(rows)} django-q2 Schedules named {name!r}: each starts a poll "
                "run every minute.",
                hint="Run manage.py runway_schedule, which keeps one and removes the others.",
                id=f"{ID}.W004",
            )
        )
    for row in rows:
        if row["func"] != POLL_FUNC:
            problem = f"calls {row['func']!r} instead of {POLL_FUNC!r}"
        elif row["repeats"] == 0:
            problem = "has no repeats left, so django-q2 no longer runs it"
        else:
            continue
        messages.append(
            Error(
                f"The django-q2 Schedule {name!r} {problem}.",
                hint="Run manage.py runway_schedule to rewrite it.",
                id=f"{ID}.E008",
            )
        )
        break
    return messages


def check_heartbeat(*, now: dt.datetime | None = None) -> list[CheckMessage]:
    """E009: no successful poll run for HEARTBEAT_MAX_AGE while a task waits that long."""
    now = now or timezone.now()
    max_age = conf.HEARTBEAT_MAX_AGE
    cutoff = now - dt.timedelta(seconds=max_age)
    last = PollerState.objects.filter(pk=1).values_list("last_success_at", flat=True).first()
    if last is not None and last >= cutoff:
        return []
    # Only a task that has been due for the whole threshold proves nothing polls; right after
    # installation (no run yet) or on an idle site, an old heartbeat means nothing.
    if not RunwayTask.objects.pollable().filter(next_poll_at__lte=cutoff).exists():
        return []
    if last is None:
        msg = (
            f"No poll run has succeeded yet, and tasks have been due for more than "
            f"{max_age:.0f} s (RUNWAY_FEED['HEARTBEAT_MAX_AGE'])."
        )
    else:
        msg = (
            f"No successful poll run for {(now - last).total_seconds():.0f} s "
            f"(RUNWAY_FEED['HEARTBEAT_MAX_AGE'] is {max_age:.0f} s) while tasks are due."
        )
    return [
        Error(
            msg,
            hint="Start the django-q2 cluster (manage.py qcluster) and check that the Schedule "
            "exists (manage.py runway_schedule), or run manage.py runway_poll --loop.",
            id=f"{ID}.E009",
        )
    ]


def check_pause(*, now: dt.datetime | None = None) -> list[CheckMessage]:
    """E010: CometAPI refused the key (401/403) and every worker paused polling."""
    now = now or timezone.now()
    state = active_pause(now)
    if state is None or state.paused_until is None:
        return []
    return [
        Error(
            f"CometAPI refused the API key; polling is paused until "
            f"{state.paused_until.isoformat()}: {state.pause_reason}",
            hint="Check RUNWAY_FEED['API_KEY'] and the account's quota; polling resumes by "
            "itself when the pause ends.",
            id=f"{ID}.E010",
        )
    ]


def check_stuck(*, now: dt.datetime | None = None) -> list[CheckMessage]:
    """W007: unfinished tasks older than STALE_AFTER."""
    count = RunwayTask.objects.stuck(now).count()
    if not count:
        return []
    return [
        Warning(
            f"{count} unfinished task(s) were submitted more than {conf.STALE_AFTER:.0f} s ago "
            "(RUNWAY_FEED['STALE_AFTER']).",
            hint="Inspect them with RunwayTask.objects.stuck() or the admin; a task left "
            "'submitting' has an unknown create outcome and needs an operator.",
            id=f"{ID}.W007",
        )
    ]


def state_messages(
    *, now: dt.datetime | None = None, using: str = DEFAULT_DB_ALIAS
) -> list[CheckMessage]:
    """The checks that read the database (Schedule, heartbeat, pause, stuck tasks)."""
    now = now or timezone.now()
    # Before the first migrate there is nothing to judge; plain ``check --deploy`` must not crash.
    if not _tables_exist(using, RunwayTask, PollerState):
        return []
    return [
        *check_schedule(using=using),
        *check_heartbeat(now=now),
        *check_pause(now=now),
        *check_stuck(now=now),
    ]


def evaluate(*, now: dt.datetime | None = None) -> list[CheckMessage]:
    """Every check of the app: settings, cluster configuration and live state."""
    return [
        *check_settings(),
        *check_callback_reachable(),
        *check_catch_up(),
        *check_sqlite_workers(),
        *state_messages(now=now),
    ]


def is_healthy(messages: Iterable[CheckMessage], *, fail_level: int = ERROR) -> bool:
    return not any(message.level >= fail_level for message in messages)


# -- stuck tasks ---------------------------------------------------------------------------------


# -- the status report ---------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _describe(message: CheckMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "level": "ERROR" if message.level >= ERROR else "WARNING",
        "message": str(message.msg),
        "hint": str(message.hint) if message.hint else None,
    }


def bounded_status_counts(*, limit: int) -> tuple[dict[str, int], list[str]]:
    """Tasks per status, counted without reading a large table, and the statuses past ``limit``.

    Unfinished statuses are counted exactly, in one GROUP BY over their part of the status
    index (it is small). Each finished status is counted up to ``limit + 1``, one bounded count
    each: a year of finished tasks is most of the table, and counting it reads it all. The
    finished statuses whose count passed ``limit`` are returned in order; their count is then
    ``limit + 1``. A fixed number of queries, whatever the size of the table.
    """
    counts = {status.value: 0 for status in Status}
    tasks = RunwayTask.objects.order_by()
    counts.update(tasks.unfinished().values_list("status").annotate(n=Count("pk")))
    past: list[str] = []
    for status in sorted(TERMINAL_STATUSES):
        counts[status] = count_up_to(tasks.filter(status=status), limit)
        if counts[status] > limit:
            past.append(status)
    return counts, past


def status_counts(*, limit: int | None = None) -> tuple[dict[str, int], list[str]]:
    """Tasks per status, and which of those counts are PostgreSQL's estimates.

    The counts of :func:`bounded_status_counts`; a finished status past ``limit`` then takes
    PostgreSQL's statistics for its figure. Other databases count it exactly. ``limit``
    defaults to ``EXACT_COUNT_LIMIT``.
    """
    limit = EXACT_COUNT_LIMIT if limit is None else limit
    counts, past = bounded_status_counts(limit=limit)
    estimated: list[str] = []
    if not past:
        return counts, estimated
    statistics = estimated_value_counts(RunwayTask, "status")
    for status in past:
        if status in statistics:
            counts[status] = max(statistics[status], limit + 1)
            estimated.append(status)
        else:
            counts[status] = RunwayTask.objects.filter(status=status).count()
    return counts, estimated


def oldest_unfinished() -> dt.datetime | None:
    """When the oldest unfinished task was created.

    One status at a time, each the first entry of its part of the (status, created_at) index:
    a MIN() over the three together walks the created_at index from the start of the year,
    past every finished task.
    """
    firsts = [
        RunwayTask.objects.filter(status=status)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
        for status in sorted(UNFINISHED_STATUSES)
    ]
    return min((first for first in firsts if first is not None), default=None)


def gateway_state(state: PollerState | None, *, now: dt.datetime) -> dict[str, Any]:
    """Failed answers of the last minute across every worker, and any hold they caused."""
    if state is None:
        return describe_gateway(GatewayHealth(), None, now=now)
    health = GatewayHealth(state.gateway_answers, state.gateway_errors, state.gateway_window_start)
    return describe_gateway(health, state.gateway_held_until, now=now)


def callbacks_state(*, now: dt.datetime) -> dict[str, Any]:
    """Whether callbacks arrive for recent finishes, so polling is only a safety net.

    One query while callbacks are on (``CALLBACK_BASE_URL`` set and ``TRUST_CALLBACKS``),
    none otherwise. The two settings are given too, so a reader can say why it is off.
    """
    verdict = read_callback_verdict(now)
    return {
        "state": verdict.state,
        "announced": verdict.announced,
        "missed": verdict.missed,
        "last_callback_at": verdict.last_callback_at,
        "callback_base_url_set": bool(conf.CALLBACK_BASE_URL),
        "trust_callbacks": conf.TRUST_CALLBACKS,
    }


def run_times_state(*, now: dt.datetime) -> dict[str, dict[str, Any]]:
    """The run times learned per profile (``generate/gen4_turbo/10``), in seconds, sorted by
    profile; empty when none is learned yet or ``LEARN_RUN_TIMES`` is off. One query (none
    when off)."""
    return {
        key: {
            "samples": learned.samples,
            "low": round(learned.low, 1),
            "median": round(learned.median, 1),
            "high": round(learned.high, 1),
        }
        for key, learned in sorted(read_run_times(now).items())
    }


def status_report(*, now: dt.datetime | None = None) -> dict[str, Any]:
    """What ``runway_status --json`` prints; the shape is documented in docs/operations.md."""
    now = now or timezone.now()
    counts, estimated = status_counts()
    oldest = oldest_unfinished()
    hour_ago = now - dt.timedelta(hours=1)
    # Per-poll history is not stored (PollerState keeps only the last run), so the last hour is
    # counted per task: tasks whose latest poll fell in the hour, and of those the ones whose
    # latest poll failed. Transitions are exact (one TaskEvent each).
    recent = RunwayTask.objects.filter(last_polled_at__gte=hour_ago).aggregate(
        polled=Count("pk"), failing=Count("pk", filter=Q(error_count__gt=0))
    )
    transitions = TaskEvent.objects.filter(
        kind=EventKind.TRANSITION, created_at__gte=hour_ago
    ).count()
    state = PollerState.objects.filter(pk=1).first()
    last_success = state.last_success_at if state else None
    # A run records its success when it ends (up to POLL_WINDOW later); until the first one
    # ends, the tasks' own poll times show that polling works. Read only then: it is a scan.
    last_task_poll = (
        RunwayTask.objects.aggregate(last=Max("last_polled_at"))["last"]
        if last_success is None
        else None
    )
    # A pause recorded for other settings (the key was changed since) is not in effect.
    paused = state is not None and pause_in_effect(state, now)
    paused_until = state.paused_until if paused and state else None
    gateway = gateway_state(state, now=now)
    callbacks = callbacks_state(now=now)
    problems = evaluate(now=now)
    return {
        "version": REPORT_VERSION,
        "generated_at": now.isoformat(),
        "healthy": is_healthy(problems),
        "counts": counts,
        "estimated": estimated,
        "unfinished": sum(counts[status] for status in UNFINISHED_STATUSES),
        "stuck": RunwayTask.objects.stuck(now).count(),
        "oldest_unfinished_age_seconds": (now - oldest).total_seconds() if oldest else None,
        "last_hour": {
            "tasks_polled": recent["polled"],
            "tasks_failing": recent["failing"],
            "transitions": transitions,
        },
        "poller": {
            "last_run_at": _iso(state.last_run_at if state else None),
            "last_success_at": _iso(last_success),
            "seconds_since_success": (now - last_success).total_seconds() if last_success else None,
            "last_task_polled_at": _iso(last_task_poll),
            "last_run": state.last_run if state else {},
            "paused": paused,
            "paused_until": _iso(paused_until),
            "pause_reason": state.pause_reason if paused and state else "",
        },
        "gateway": {**gateway, "held_until": _iso(gateway["held_until"])},
        "callbacks": {**callbacks, "last_callback_at": _iso(callbacks["last_callback_at"])},
        "run_times": run_times_state(now=now),
        "learn_run_times": conf.LEARN_RUN_TIMES,
        "problems": [_describe(message) for message in problems],
    }
