"""Goal 5: API calls per task and finish-to-seen delay, on a simulated clock.

1,000 tasks are created over the first minute, wait 1-10 s in the queue, a quarter of them are
throttled for 30-120 s more, then run for 20-300 s (uniformly spread). The fake CometAPI and the
poller share one :class:`FakeClock`, advanced in 1 s steps; at each step the poller runs rounds
until nothing is due. So the whole simulation takes seconds, and our delays are rounded up to the
step (a conservative error).

The baseline is the official Runway SDK's waiter: from creation, one poll every 6 s +/- 1.5 s
until the task is finished, simulated on the same scripts and the same clock (the fake server's
task model decides what each of its polls would have seen).

Run for both progress styles COMETAPI.md allows: ``fine`` (a real percentage; the poller aims its
next poll at the finish the progress rate predicts) and ``coarse`` (only 0 %, 30 %, 100 %).
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    API_KEY,
    MP,
    bench_database,
    configure_feed,
    database_label,
    goal,
    parse_args,
    print_table,
)

START = 1_800_000_000.0
STEP = 1.0
SDK_INTERVAL, SDK_JITTER = 6.0, 1.5


def scripts(count: int, style: str) -> list[tuple[float, Any]]:
    """(created_at, TaskScript) per task, the same for both styles and every run."""
    from django_runway_feed.testing import TaskScript

    rng = random.Random(20240611)
    plans = []
    for _ in range(count):
        created = START + rng.uniform(0, 60)
        throttled = rng.uniform(30, 120) if rng.random() < 0.25 else 0.0
        script = TaskScript(
            queued_for=rng.uniform(1, 10),
            throttled_for=throttled,
            run_for=rng.uniform(20, 300),
            progress_style=style,
        )
        plans.append((created, script))
    return plans


def sdk_waiter(plans: list[tuple[float, Any]]) -> tuple[list[int], list[float]]:
    """Calls per task and finish-to-seen delays of the SDK's fixed-interval waiter."""
    from django_runway_feed.testing.tasks import TERMINAL_PHASES, FakeTask

    rng = random.Random(6)
    calls, delays = [], []
    for index, (created, script) in enumerate(plans):
        task = FakeTask(task_id=str(index), script=script, created_at=created, action="")
        at, count = created, 0
        while True:
            count += 1
            if task.phase_at(at) in TERMINAL_PHASES:
                break
            at += rng.uniform(SDK_INTERVAL - SDK_JITTER, SDK_INTERVAL + SDK_JITTER)
        calls.append(count)
        delays.append(at - task.finished_at)
    return calls, delays


def track_plans(api: Any, plans: list[tuple[float, Any]], *, prefix: str) -> dict[str, float]:
    """Script ``plans`` in the fake API and track each as a queued row; their finish times."""
    from django_runway_feed.models import RunwayTask
    from django_runway_feed.testing.tasks import FakeTask

    finished: dict[str, float] = {}
    rows = []
    for index, (created, script) in enumerate(plans):
        task_id = api.add_task(script, task_id=f"{prefix}-{index:05d}", created_at=created)
        finished[task_id] = FakeTask(task_id, script, created, "").finished_at
        at = dt.datetime.fromtimestamp(created, tz=dt.UTC)
        rows.append(
            RunwayTask(
                task_id=task_id,
                route="tracked",
                status="queued",
                submitted_at=at,
                created_at=at,
                next_poll_at=at,
            )
        )
    RunwayTask.objects.bulk_create(rows, batch_size=500)
    return finished


def ours(plans: list[tuple[float, Any]]) -> tuple[list[int], list[float], float]:
    """Calls per task, finish-to-seen delays and simulated seconds of our poller."""
    from django_runway_feed.models import RunwayTask
    from django_runway_feed.polling import Poller
    from django_runway_feed.testing import FakeClock, FakeCometAPI

    RunwayTask.objects.all().delete()
    clock = FakeClock(start=START)

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC)

    with FakeCometAPI(api_key=API_KEY, clock=clock) as api:
        configure_feed(BASE_URL=api.url)
        finished = track_plans(api, plans, prefix="eco")
        with Poller(clock=now) as poller:
            calls, delays, seconds, _throttled = poll_until_finished(poller, clock, api, finished)
    return calls, delays, seconds


def poll_until_finished(
    poller: Any, clock: Any, api: Any, finished: dict[str, float]
) -> tuple[list[int], list[float], float, int]:
    """Poll on the fake clock until no task is unfinished (or 5,000 steps).

    Returns the calls per task, the finish-to-seen delays, the simulated seconds and the
    requests the budget held back.
    """
    from django_runway_feed.models import RunwayTask

    steps = throttled = 0
    while steps < 5000:
        while True:
            summary = poller.run_round()
            throttled += summary.throttled
            if not summary.claimed:
                break
        if steps % 20 == 0 and not RunwayTask.objects.unfinished().exists():
            break
        clock.advance(STEP)
        steps += 1
    calls = [api.call_count(task_id) for task_id in finished]
    delays = [
        seen.timestamp() - finished[task_id]
        for task_id, seen in RunwayTask.objects.values_list("task_id", "last_polled_at")
        if seen is not None
    ]
    return calls, delays, steps * STEP, throttled


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def run_style(queue: Any, style: str, count: int) -> None:
    """In a subprocess with its own database: both waiters on one progress style."""
    with bench_database():
        configure_feed(CONCURRENCY=16)
        plans = scripts(count, style)
        sdk_calls, sdk_delays = sdk_waiter(plans)
        our_calls, our_delays, simulated = ours(plans)
        queue.put(
            (style, sdk_calls, sdk_delays, our_calls, our_delays, simulated, database_label())
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    count = 60 if args.quick else 1000
    rows: list[tuple[object, ...]] = []
    results: dict[str, tuple[float, float]] = {}
    # The two styles are independent: each runs in its own process on its own database.
    queue = MP.Queue()
    processes = [
        MP.Process(target=run_style, args=(queue, style, count)) for style in ("fine", "coarse")
    ]
    for process in processes:
        process.start()
    outcomes = {}
    for _process in processes:
        outcome = queue.get(timeout=600)
        outcomes[outcome[0]] = outcome
    for process in processes:
        process.join(timeout=30)
    label = ""
    for style in ("fine", "coarse"):
        _style, sdk_calls, sdk_delays, our_calls, our_delays, simulated, label = outcomes[style]
        sdk_mean = statistics.mean(sdk_calls)
        our_mean = statistics.mean(our_calls)
        rows.append(
            (style, "SDK waiter (6 s +/- 1.5 s)", sdk_mean, p95(sdk_delays), max(sdk_delays))
        )
        rows.append((style, "poller", our_mean, p95(our_delays), max(our_delays)))
        results[style] = (our_mean / sdk_mean, p95(our_delays))
        print(f"  {style}: {simulated:.0f} simulated seconds")
    print_table(
        f"API-call economy on {label}, {count} tasks",
        ("progress", "who", "calls/task", "p95 delay s", "max delay s"),
        rows,
    )
    for style, (ratio, delay) in results.items():
        goal(f"economy_{style}_calls_vs_sdk", ratio, 0.5, at_most=True, unit="x")
        goal(f"economy_{style}_p95_delay", delay, 10, at_most=True, unit="s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
