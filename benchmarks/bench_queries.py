"""Goal 3: database queries per polled task, counted with Django's ``CaptureQueriesContext``.

Quiet polls (nothing changed) are written in bulk: at most 0.1 queries per polled task. A
transition costs a small fixed number of queries (its conditional UPDATE, its TaskEvent and the
outbox dispatch after commit) on top of the round's own. The baseline is the naive loop's two
queries per task (one SELECT streamed over the batch aside, one UPDATE per ``save()``).
The shared request budget (``MAX_REQUESTS_PER_SECOND``) is set high enough never to hold a
round back, so its compare-and-set is counted but no round waits for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from benchmarks.common import (
    RemoteFakeAPI,
    bench_database,
    configure_feed,
    database_label,
    frozen_clock,
    goal,
    parse_args,
    print_table,
    seed_tasks,
    task_ids,
)

BATCH = 100
TRANSITION_TARGET = 6


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    rounds = 2 if args.quick else 5
    with bench_database():
        from django.db import connection
        from django.test.utils import CaptureQueriesContext
        from django.utils import timezone

        from django_runway_feed.models import RunwayTask
        from django_runway_feed.polling import Poller

        quiet_ids = task_ids("q", BATCH * rounds)
        moving_ids = task_ids("m", BATCH)
        with (
            RemoteFakeAPI(latency=0.0, prefix="q", count=len(quiet_ids)) as quiet_api,
            RemoteFakeAPI(latency=0.0, prefix="m", count=BATCH) as moving_api,
        ):
            now = timezone.now()
            seed_tasks(quiet_ids, now=now)
            seed_tasks(moving_ids, status="queued", now=now, due_at=now + dt.timedelta(days=1))
            # The request budget stays on (its query is counted) but high enough that five
            # rounds back to back are never held back: a held-back round polls nothing.
            configure_feed(BASE_URL=quiet_api.url, BATCH_SIZE=BATCH, MAX_REQUESTS_PER_SECOND=10**6)
            with (
                Poller(clock=frozen_clock(now)) as poller,
                CaptureQueriesContext(connection) as quiet,
            ):
                polled = sum(poller.run_round().polled for _ in range(rounds))
            quiet_per_round = len(quiet) / rounds

            # Every answer now moves a queued row to running: one transition per task.
            RunwayTask.objects.filter(task_id__in=moving_ids).update(next_poll_at=now)
            configure_feed(BASE_URL=moving_api.url)
            with (
                Poller(clock=frozen_clock(now)) as poller,
                CaptureQueriesContext(connection) as moving,
            ):
                summary = poller.run_round()
        per_quiet_task = len(quiet) / polled
        per_transition = (len(moving) - quiet_per_round) / max(1, summary.transitions)
        print_table(
            f"Queries on {database_label()}, batches of {BATCH}",
            ("round", "tasks polled", "transitions", "queries", "per task"),
            [
                ("naive loop (SELECT + save() each)", BATCH, 0, 1 + BATCH, (1 + BATCH) / BATCH),
                (f"quiet x{rounds}", polled, 0, len(quiet), per_quiet_task),
                (
                    "all transitions",
                    summary.polled,
                    summary.transitions,
                    len(moving),
                    len(moving) / summary.polled,
                ),
            ],
        )
        print(f"  fixed queries of a quiet round: {quiet_per_round:g}")
        goal("queries_per_quiet_task", per_quiet_task, 0.1, at_most=True, unit="queries")
        goal(
            "queries_per_transition",
            per_transition,
            TRANSITION_TARGET,
            at_most=True,
            unit="queries",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
