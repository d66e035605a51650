"""What a 32 % fault storm costs: finish-to-seen delay (p95, max) and calls per task.

The workload of ``bench_economy`` (tasks created over the first minute, queued 1-10 s, a quarter
throttled 30-120 s more, then running 20-300 s, coarse progress), with ``POLL_INTERVAL`` 5 s
and ``MAX_POLL_INTERVAL`` 15 s (the site of issue 13). The fake server and the poller share one
:class:`FakeClock`, advanced in 1 s steps; the shared request budget runs on it too, so holds
last simulated seconds.

Three runs on the same scripts, in this order:

- **baseline**: no fault;
- **storm**: 32 % of feed requests fail, drawn from the fake server's transient faults (429 with
  ``Retry-After: 1``, 500, 502, 503, an HTML page, truncated JSON);
- **storm, old backoff**: the same storm with the per-task backoff of before issue 13
  (doubling up to 600 s, whatever ``MAX_POLL_INTERVAL``), for comparison.

Ratios are against the baseline of the same run.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.bench_economy import START, p95, poll_until_finished, scripts, track_plans
from benchmarks.common import (
    API_KEY,
    bench_database,
    configure_feed,
    database_label,
    goal,
    parse_args,
    print_table,
)

STORM_RATE = 0.32
SEED = 13


def old_error_backoff(error_count: int) -> float:
    """The per-task backoff before issue 13, for comparison."""
    from django_runway_feed import planning
    from django_runway_feed.conf import conf

    delay = conf.POLL_INTERVAL * (2 ** min(error_count, 16))
    return planning._jittered(min(delay, 600.0), floor=conf.POLL_INTERVAL)


def simulate(plans: list[tuple[float, Any]], *, fault_rate: float) -> dict[str, Any]:
    """Run the poller on ``plans`` until every task finished; delays, calls and holds."""
    from django_runway_feed.budget import RequestBudget
    from django_runway_feed.models import RunwayTask
    from django_runway_feed.polling import Poller
    from django_runway_feed.testing import FakeClock, FakeCometAPI

    RunwayTask.objects.all().delete()
    clock = FakeClock(start=START)

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC)

    with FakeCometAPI(api_key=API_KEY, clock=clock, fault_rate=fault_rate, seed=SEED) as api:
        configure_feed(BASE_URL=api.url)
        finished = track_plans(api, plans, prefix="storm")
        budget = RequestBudget(None, now=clock.now)
        with Poller(clock=now, budget=budget) as poller:
            calls, delays, seconds, throttled = poll_until_finished(poller, clock, api, finished)
    return {"calls": calls, "delays": delays, "throttled": throttled, "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    count = 60 if args.quick else 1000
    with bench_database():
        from django_runway_feed import planning
        from django_runway_feed.polling import holds

        configure_feed(CONCURRENCY=16, POLL_INTERVAL=5, MAX_POLL_INTERVAL=15)
        plans = scripts(count, "coarse")
        runs = {
            "baseline (0 %)": simulate(plans, fault_rate=0.0),
            "storm (32 %)": simulate(plans, fault_rate=STORM_RATE),
        }
        if not args.quick:  # the longest run by far; CI only checks the script still works
            # Before issue 13: twice POLL_INTERVAL after the first error, doubling up to 600 s.
            current = planning.error_backoff
            # The rule lives in planning; the poller's storm hold uses it too.
            planning.error_backoff = holds.error_backoff = old_error_backoff
            try:
                runs["storm (32 %), old backoff"] = simulate(plans, fault_rate=STORM_RATE)
            finally:
                planning.error_backoff = holds.error_backoff = current
        label = database_label()
    base = runs["baseline (0 %)"]
    rows: list[tuple[object, ...]] = []
    for name, run in runs.items():
        rows.append(
            (
                name,
                statistics.mean(run["calls"]),
                p95(run["delays"]),
                max(run["delays"]),
                run["throttled"],
                run["seconds"],
            )
        )
    print_table(
        f"Fault storm on {label}, {count} tasks, POLL_INTERVAL 5 s, MAX_POLL_INTERVAL 15 s",
        ("run", "calls/task", "p95 delay s", "max delay s", "held rounds", "simulated s"),
        rows,
    )
    storm = runs["storm (32 %)"]
    base_calls = statistics.mean(base["calls"])
    print(
        f"  storm vs baseline: calls/task x{statistics.mean(storm['calls']) / base_calls:.2f}, "
        f"p95 delay x{p95(storm['delays']) / p95(base['delays']):.2f}, "
        f"max delay x{max(storm['delays']) / max(base['delays']):.2f}"
    )
    old = runs.get("storm (32 %), old backoff")
    goal("storm_p95_delay_vs_baseline", p95(storm["delays"]) / p95(base["delays"]), 3, at_most=True)
    goal(
        "storm_max_delay_vs_old_backoff",
        max(storm["delays"]) / max(old["delays"]) if old else None,
        0.5,
        at_most=True,
    )
    goal("storm_calls_vs_baseline", statistics.mean(storm["calls"]) / base_calls, 1.5, at_most=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
