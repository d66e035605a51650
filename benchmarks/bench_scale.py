"""Scale: a year of tasks (1,000,000 tasks, 5,000,000 events) and the poller, admin and report.

The table is seeded the way a popular site fills it in a year: 98 % of the tasks finished, spread
over 365 days, 2 % queued or running (created in the last hour, a tenth of them due), five
events per task, and 500 events waiting for the outbox's redelivery. On PostgreSQL the rows are
written by ``generate_series`` in SQL, then ``VACUUM ANALYZE``; elsewhere by ``bulk_create``.

Each operation runs once to warm up, then five times; the median is printed with its query
count, its slowest query and that query's share, and a ratio against a baseline of the same
run where one makes sense: a claim against the read-back by lease owner it replaced, a round's
database time against its HTTP time, a page against the task page (a primary-key read).

Sizes: ``--quick`` (2,000 tasks, for CI; numbers not judged), the default (1,000,000 tasks on
PostgreSQL; 100,000 elsewhere, where a million rows take minutes to seed), or ``--tasks N``.
``--explain`` prints the PostgreSQL plan of each operation's slowest query. ``--database NAME``
uses (and keeps) an existing PostgreSQL database, seeding it only when it is empty, so a
million rows are written once while the figures are measured again.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import (
    RemoteFakeAPI,
    bench_database,
    configure_feed,
    database_label,
    goal,
    on_postgres,
    print_table,
    setup_django,
)

DAYS = 365
EVENTS_PER_TASK = 5
UNFINISHED_SHARE = 0.02
DUE_SHARE = 0.1
UNDISPATCHED = 500
LATENCY = 0.05
CONCURRENCY = 16
REPEATS = 5
EXPLAIN = False
SEARCH_WORD = "otter"
ANIMALS = [
    "cat",
    "dog",
    "fox",
    "owl",
    "bear",
    "wolf",
    "deer",
    "hare",
    "lynx",
    "seal",
    "crab",
    "orca",
    "swan",
    "frog",
    "newt",
    "moth",
    "otter",
    "heron",
    "bison",
    "yak",
]
PLACES = [
    "beach",
    "forest",
    "city",
    "desert",
    "harbour",
    "glacier",
    "meadow",
    "canyon",
    "rooftop",
    "library",
]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, for CI")
    parser.add_argument("--tasks", type=int, help="number of tasks (default: the full size)")
    parser.add_argument("--explain", action="store_true", help="print the slowest queries' plans")
    parser.add_argument("--database", help="an existing PostgreSQL database to use and keep")
    return parser.parse_args(argv)


@dataclass
class Measured:
    name: str
    median_ms: float
    database_ms: float
    queries: int
    slowest_ms: float
    extra: dict[str, float] = field(default_factory=dict)


class QueryTimer:
    """Times every query of this thread's connection (``connection.execute_wrapper``)."""

    def __init__(self) -> None:
        self.queries: list[tuple[float, str, Any]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.queries.append((time.perf_counter() - started, sql, params))

    @property
    def seconds(self) -> float:
        return sum(duration for duration, _sql, _params in self.queries)


@contextlib.contextmanager
def timed_queries() -> Iterator[QueryTimer]:
    from django.db import connection

    timer = QueryTimer()
    with connection.execute_wrapper(timer):
        yield timer


def measure(
    name: str, run: Callable[[], Any], *, reset: Callable[[], Any] | None = None
) -> Measured:
    """Warm up once, then the median of ``REPEATS`` runs, each after ``reset`` (not timed).

    With ``--explain``, one more run prints the plan of the slowest query as it runs.
    """
    times: list[float] = []
    database: list[float] = []
    last = QueryTimer()
    for attempt in range(REPEATS + 1):
        if reset is not None:
            reset()
        with timed_queries() as timer:
            started = time.perf_counter()
            run()
            elapsed = time.perf_counter() - started
        if attempt:  # the first run warms the caches up
            times.append(elapsed)
            database.append(timer.seconds)
            last = timer
    slowest = max(last.queries, default=(0.0, "", None))
    result = Measured(
        name,
        statistics.median(times) * 1000,
        statistics.median(database) * 1000,
        len(last.queries),
        slowest[0] * 1000,
    )
    if EXPLAIN and slowest[1]:
        if reset is not None:
            reset()
        plans = explained(slowest[1], run)
        print(f"\nplan of the slowest query of {name} ({result.slowest_ms:.1f} ms):")
        print("  " + " ".join(slowest[1].split())[:240])
        for line in plans:
            print("    " + line)
    return result


def explained(sql: str, run: Callable[[], Any]) -> list[str]:
    """Run ``run``; just before ``sql`` executes, EXPLAIN ANALYZE it (rolled back)."""
    from django.db import connection, transaction

    plans: list[str] = []

    def wrapper(execute: Any, query: str, params: Any, many: bool, context: Any) -> Any:
        if query == sql and not plans and connection.vendor == "postgresql":
            # ANALYZE runs the statement: in a savepoint rolled back, so it leaves no trace.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query, params)
                plans.extend(row[0] for row in cursor.fetchall())
                transaction.set_rollback(True)
        return execute(query, params, many, context)

    with connection.execute_wrapper(wrapper):
        run()
    return plans


# -- seeding ---------------------------------------------------------------------------------


def seed_postgres(tasks: int, now: dt.datetime) -> None:
    """Write the year of tasks and events with ``generate_series`` (minutes at a million)."""
    from django.db import connection

    from django_runway_feed.models import RunwayTask, TaskEvent

    unfinished = max(1, int(tasks * UNFINISHED_SHARE))
    finished = tasks - unfinished
    year = DAYS * 86_400
    task_table, event_table = RunwayTask._meta.db_table, TaskEvent._meta.db_table
    # n counts from 1; the last ``unfinished`` rows are the ones still queued or running.
    status = f"""CASE
        WHEN n > {finished} THEN (CASE WHEN mod(n, 2) = 0 THEN 'queued' ELSE 'running' END)
        WHEN mod(n, 100) < 4 THEN 'failed' WHEN mod(n, 100) < 5 THEN 'cancelled'
        ELSE 'succeeded' END"""
    created = f"""CASE WHEN n > {finished}
        THEN %(now)s - make_interval(secs => ({tasks} - n) * 3600.0 / {unfinished})
        ELSE %(now)s - make_interval(secs => 3600 + ({finished} - n) * {year}.0 / {finished}) END"""
    animals = "ARRAY[" + ", ".join(f"'{word}'" for word in ANIMALS) + "]"
    places = "ARRAY[" + ", ".join(f"'{word}'" for word in PLACES) + "]"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {task_table} (
                task_id, route, action, status, provider_status, provider_inner_status, progress,
                result_url, outputs, failure_code, fail_reason, request, prompt, created_at,
                updated_at, submitted_at, started_at, finished_at, last_polled_at, next_poll_at,
                poll_count, error_count, last_error, lease_owner, object_id, metadata,
                output_file, poster_file, stored_files, output_sha256, output_content_type,
                download_status, download_attempts, download_error, expects_callback)
            SELECT
                CASE WHEN n > {finished} THEN 'u-' || lpad((n - {finished} - 1)::text, 7, '0')
                     ELSE 'f-' || n END,
                'generate', 'gen4_turbo', s.status, '', '',
                CASE WHEN s.status = 'succeeded' THEN 100 ELSE 40 END,
                CASE WHEN s.status = 'succeeded' THEN 'https://cdn.example/' || n || '.mp4'
                     ELSE '' END,
                '[]'::jsonb,
                CASE WHEN s.status = 'failed'
                     THEN (ARRAY['timeout', 'not_found', 'SAFETY.INPUT.TEXT', 'INTERNAL'])
                          [1 + mod(n, 4)]
                     ELSE '' END,
                CASE WHEN s.status = 'failed' THEN 'The task failed (' || n || ')' ELSE '' END,
                '{{}}'::jsonb,
                'a ' || ({animals})[1 + mod(n, {len(ANIMALS)})] || ' surfing at the '
                    || ({places})[1 + mod(n / {len(ANIMALS)}, {len(PLACES)})] || ' #' || n,
                s.created_at, s.created_at + interval '2 minutes', s.created_at,
                s.created_at + interval '10 seconds',
                CASE WHEN n > {finished} THEN NULL ELSE s.created_at + interval '2 minutes' END,
                CASE WHEN n > {finished} THEN %(now)s - make_interval(secs => mod(n, 60))
                     ELSE s.created_at + interval '2 minutes' END,
                CASE WHEN n <= {finished} THEN NULL
                     WHEN mod(n, 10) = 0 THEN %(now)s - interval '1 second'
                     ELSE %(now)s + make_interval(secs => 1 + mod(n, 60)) END,
                12, 0, '', '', '', '{{}}'::jsonb, '', '', '[]'::jsonb, '', '', '', 0, '', false
            FROM generate_series(1, {tasks}) AS n,
                 LATERAL (SELECT {status} AS status, {created} AS created_at) AS s
            ORDER BY n
            """,
            {"now": now},
        )
        cursor.execute(
            f"""
            INSERT INTO {event_table} (task_id, kind, from_status, to_status, progress, message,
                                       created_at, dispatched_at, redeliver_after)
            SELECT t.id,
                   CASE WHEN k <= 3 THEN 'transition' ELSE 'manual_poll' END,
                   CASE k WHEN 1 THEN 'submitting' WHEN 2 THEN 'queued' ELSE 'running' END,
                   CASE k WHEN 1 THEN 'queued' WHEN 2 THEN 'running' WHEN 3 THEN t.status
                          ELSE 'running' END,
                   20 * k, '', t.created_at + make_interval(secs => 10 * k),
                   t.created_at + make_interval(secs => 10 * k), NULL
            FROM {task_table} t, generate_series(1, {EVENTS_PER_TASK}) AS k
            ORDER BY t.id, k
            """
        )


def seed_orm(tasks: int, now: dt.datetime) -> None:
    """The same rows through ``bulk_create`` (SQLite and other databases)."""
    from django.db import transaction

    from django_runway_feed.models import RunwayTask, TaskEvent

    unfinished = max(1, int(tasks * UNFINISHED_SHARE))
    finished = tasks - unfinished
    rows: list[RunwayTask] = []

    def status_of(n: int) -> str:
        if n > finished:
            return "queued" if n % 2 == 0 else "running"
        return "failed" if n % 100 < 4 else "cancelled" if n % 100 < 5 else "succeeded"

    for n in range(1, tasks + 1):
        status = status_of(n)
        if n > finished:
            created = now - dt.timedelta(seconds=(tasks - n) * 3600 / unfinished)
            polled = now - dt.timedelta(seconds=n % 60)
            due: dt.datetime | None = (
                now - dt.timedelta(seconds=1)
                if n % 10 == 0
                else now + dt.timedelta(seconds=1 + n % 60)
            )
        else:
            created = now - dt.timedelta(seconds=3600 + (finished - n) * DAYS * 86_400 / finished)
            polled, due = created + dt.timedelta(minutes=2), None
        rows.append(
            RunwayTask(
                task_id=f"u-{n - finished - 1:07d}" if n > finished else f"f-{n}",
                route="generate",
                action="gen4_turbo",
                status=status,
                progress=100 if status == "succeeded" else 40,
                failure_code=(
                    ["timeout", "not_found", "SAFETY.INPUT.TEXT", "INTERNAL"][n % 4]
                    if status == "failed"
                    else ""
                ),
                prompt=f"a {ANIMALS[n % len(ANIMALS)]} surfing at the "
                f"{PLACES[(n // len(ANIMALS)) % len(PLACES)]} #{n}",
                created_at=created,
                submitted_at=created,
                last_polled_at=polled,
                next_poll_at=due,
                finished_at=None if n > finished else created + dt.timedelta(minutes=2),
                poll_count=12,
            )
        )
    with transaction.atomic():
        RunwayTask.objects.bulk_create(rows, batch_size=2000)
        events = [
            TaskEvent(
                task=task,
                kind="transition" if k <= 3 else "manual_poll",
                from_status=("submitting", "queued", "running", "running", "running")[k - 1],
                to_status=("queued", "running", task.status, "running", "running")[k - 1],
                progress=20 * k,
                created_at=task.created_at + dt.timedelta(seconds=10 * k),
                dispatched_at=task.created_at + dt.timedelta(seconds=10 * k),
            )
            for task in RunwayTask.objects.order_by("pk").only("pk", "status", "created_at")
            for k in range(1, EVENTS_PER_TASK + 1)
        ]
        TaskEvent.objects.bulk_create(events, batch_size=2000)


def undispatched_events(count: int) -> list[int]:
    """The events of the newest finished tasks, which the sweep will find due."""
    from django_runway_feed.models import TaskEvent

    return list(
        TaskEvent.objects.filter(task__status="succeeded", kind="transition", to_status="succeeded")
        .order_by("-pk")
        .values_list("pk", flat=True)[:count]
    )


def make_undelivered(pks: list[int], now: dt.datetime) -> None:
    from django_runway_feed.models import TaskEvent

    TaskEvent.objects.filter(pk__in=pks).update(
        dispatched_at=None, redeliver_after=now - dt.timedelta(minutes=5)
    )


def seed(tasks: int, now: dt.datetime) -> None:
    from django.db import connection

    from django_runway_feed.models import RunwayTask

    if RunwayTask.objects.exists():
        return
    started = time.perf_counter()
    if connection.vendor == "postgresql":
        seed_postgres(tasks, now)
    else:
        seed_orm(tasks, now)
    make_undelivered(undispatched_events(UNDISPATCHED), now)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"  seeded {tasks:,} tasks in {time.perf_counter() - started:,.1f} s")


@contextlib.contextmanager
def kept_database(name: str) -> Iterator[str]:
    """An existing database, migrated and kept (``--database``)."""
    from django.core.management import call_command

    os.environ["RUNWAY_BENCH_DATABASE"] = name
    setup_django()
    call_command("migrate", verbosity=0, interactive=False)
    yield name


# -- the operations --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    global EXPLAIN
    args = parse(argv)
    EXPLAIN = args.explain
    # The sweep's "re-sent" warnings are expected here.
    logging.getLogger("django_runway_feed").setLevel(logging.ERROR)
    tasks = args.tasks or (2_000 if args.quick else 1_000_000 if on_postgres() else 100_000)
    database = kept_database(args.database) if args.database else bench_database()
    with database:
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.test import Client
        from django.utils import timezone

        from django_runway_feed import outbox
        from django_runway_feed.models import RunwayTask, TaskEvent
        from django_runway_feed.polling import Poller
        from django_runway_feed.pruning import prune_finished_tasks

        now = timezone.now()
        seed(tasks, now)
        tasks = RunwayTask.objects.count()
        unfinished = RunwayTask.objects.unfinished().count()
        print(f"\n{database_label()}: {tasks:,} tasks, {unfinished:,} unfinished")
        results: list[Measured] = []
        configure_feed(
            BATCH_SIZE=100,
            CONCURRENCY=CONCURRENCY,
            MAX_REQUESTS_PER_SECOND=10**6,
            LEASE_SECONDS=120,
        )

        # -- the poller: a claim, and a round of 100 ------------------------------------------
        with Poller(clock=lambda: now) as poller:
            claimed: list[int] = []
            owner = "bench:claim"

            def claim() -> None:
                claimed[:] = [task.pk for task in poller.claim(owner, now=now, limit=100)]

            def unclaim() -> None:
                if claimed:
                    RunwayTask.objects.filter(pk__in=claimed).update(
                        lease_owner="", lease_expires_at=None
                    )

            results.append(measure("Poller.claim(limit=100)", claim, reset=unclaim))
            RunwayTask.objects.filter(lease_owner=owner).update(
                lease_owner="", lease_expires_at=None
            )
            claim()
            # The read-back this claim replaced: every row leased to the owner, found by owner.
            old_read_back = measure(
                "before: read back by lease_owner",
                lambda: list(RunwayTask.objects.filter(lease_owner=owner)),
            )
            unclaim()
            results.append(old_read_back)

        with RemoteFakeAPI(
            latency=LATENCY,
            prefix="u",
            count=unfinished,
            script={"queued_for": 0, "run_for": 10_000_000},
        ) as api:
            configure_feed(BASE_URL=api.url)
            round_pks = list(
                RunwayTask.objects.unfinished().order_by("pk").values_list("pk", flat=True)[:100]
            )

            def due_again() -> None:
                # The same 100 tasks each time, due before any other, half of them queued: the
                # fake API says running, so those are transitions and the rest quiet polls.
                tasks = RunwayTask.objects.filter(pk__in=round_pks)
                tasks.update(
                    status="running",
                    next_poll_at=now - dt.timedelta(days=1),
                    lease_owner="",
                    lease_expires_at=None,
                )
                tasks.filter(pk__in=round_pks[::2]).update(status="queued")

            with Poller(clock=lambda: now) as poller:
                rounds: list[tuple[float, float, int, int]] = []

                def one_round() -> None:
                    with timed_queries() as timer:
                        started = time.perf_counter()
                        summary = poller.run_round()
                        elapsed = time.perf_counter() - started
                    rounds.append((elapsed, timer.seconds, summary.polled, summary.transitions))

                round_result = measure("run_round() of 100", one_round, reset=due_again)
        measured_rounds = rounds[1:]
        round_db = statistics.median(db for _total, db, _p, _t in measured_rounds)
        round_total = statistics.median(total for total, _db, _p, _t in measured_rounds)
        round_result.extra = {
            "db_ms": round_db * 1000,
            "http_ms": (round_total - round_db) * 1000,
            "polled": statistics.median(p for _total, _db, p, _t in measured_rounds),
            "transitions": statistics.median(t for _total, _db, _p, t in measured_rounds),
        }
        results.append(round_result)

        # -- the admin ------------------------------------------------------------------------
        user_model = get_user_model()
        user = user_model.objects.filter(username="bench").first() or (
            user_model.objects.create_superuser("bench", "bench@example.com", "bench")
        )
        client = Client()
        client.force_login(user)
        base = "/admin/django_runway_feed/"
        newest = RunwayTask.objects.order_by("-pk").values_list("pk", flat=True).first()
        year = RunwayTask.objects.finished().order_by("pk").values_list("created_at", flat=True)[0]
        pages = {
            "task page (baseline)": f"{base}runwaytask/{newest}/change/",
            "admin list, unfiltered": f"{base}runwaytask/",
            "admin list, status=running": f"{base}runwaytask/?status__exact=running",
            "admin list, stuck": f"{base}runwaytask/?stuck=yes",
            "admin list, a year": f"{base}runwaytask/?created_at__year={year.year}",
            "admin search, one word": f"{base}runwaytask/?q={SEARCH_WORD}",
            "admin search, a task id": f"{base}runwaytask/?q=u-0000001",
            "event list, unfiltered": f"{base}taskevent/",
        }
        for name, url in pages.items():

            def get(url: str = url) -> None:
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)

            results.append(measure(name, get))

        # -- the status report, the sweep and an idle prune -----------------------------------
        results.append(
            measure(
                "runway_status --json",
                lambda: call_command("runway_status", "--json", stdout=io.StringIO()),
            )
        )
        due_events = undispatched_events(UNDISPATCHED)
        for size in (len(due_events) // 10 or 1, len(due_events)):
            chosen = due_events[:size]

            def undeliver(chosen: list[int] = chosen) -> None:
                TaskEvent.objects.filter(dispatched_at__isnull=True).exclude(pk__in=chosen).update(
                    dispatched_at=now
                )
                make_undelivered(chosen, now)

            results.append(
                measure(
                    f"outbox.sweep(), {size} due", lambda: outbox.sweep(now=now), reset=undeliver
                )
            )
        # The oldest day pruned, the statistics left as they were (autovacuum lags behind a
        # prune): what a scheduled run meets the next minute, with nothing left to prune.
        # The oldest tenth pruned (runway_prune), the statistics left as they were (autovacuum
        # lags behind): what the scheduled run meets next, with nothing left to prune.
        kept_days = DAYS * 0.9
        started = time.perf_counter()
        pruned = prune_finished_tasks(days=kept_days, now=now)
        print(
            f"  runway_prune of {pruned.tasks:,} tasks and {pruned.events:,} events: "
            f"{time.perf_counter() - started:,.1f} s"
        )
        results.append(
            measure(
                "idle prune batch",
                lambda: prune_finished_tasks(days=kept_days, max_batches=1, now=now),
            )
        )

        by_name = {result.name: result for result in results}
        print_table(
            f"Median of {REPEATS} on {database_label()}, {tasks:,} tasks",
            ("operation", "ms", "in queries ms", "queries", "slowest query ms"),
            [(r.name, r.median_ms, r.database_ms, r.queries, r.slowest_ms) for r in results],
        )
        extra = round_result.extra
        print(
            f"  round: {extra['polled']:.0f} polled, {extra['transitions']:.0f} transitions, "
            f"database {extra['db_ms']:.0f} ms, HTTP and the rest {extra['http_ms']:.0f} ms "
            f"({LATENCY * 1000:.0f} ms latency, CONCURRENCY {CONCURRENCY})"
        )
        claim_ms = by_name["Poller.claim(limit=100)"].median_ms
        print(f"  claim vs the old read-back: {claim_ms / old_read_back.median_ms:.3f} x")
        baseline = by_name["task page (baseline)"].median_ms
        for name in pages:
            if name != "task page (baseline)":
                print(f"  {name}: {by_name[name].median_ms / baseline:.1f} x the task page")
        goal("claim_ms", claim_ms, 5, at_most=True, unit="ms")
        claim_db = by_name["Poller.claim(limit=100)"].database_ms
        goal("claim_database_ms", claim_db, 5, at_most=True, unit="ms")
        goal(
            "round_db_share",
            extra["db_ms"] / (extra["db_ms"] + extra["http_ms"]),
            0.5,
            at_most=True,
        )
        for name, target, label in (
            ("admin list, unfiltered", 300, "admin_list_ms"),
            ("admin list, status=running", 300, "admin_status_ms"),
            ("admin list, stuck", 300, "admin_stuck_ms"),
            ("admin list, a year", 300, "admin_year_ms"),
            ("admin search, one word", 500, "admin_search_ms"),
            ("event list, unfiltered", 300, "event_list_ms"),
            ("runway_status --json", 200, "status_json_ms"),
        ):
            goal(label, by_name[name].median_ms, target, at_most=True, unit="ms")
        sweeps = [result for result in results if result.name.startswith("outbox.sweep")]
        goal(
            "sweep_queries_large_vs_small", sweeps[-1].queries / sweeps[0].queries, 1, at_most=True
        )
        goal("idle_prune_ms", by_name["idle prune batch"].median_ms, 20, at_most=True, unit="ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
