"""Goal 5 and issue 18: API calls per task and finish-to-seen delay, on a simulated clock.

Two workloads of 1,000 tasks each, created over the first minute. Each task waits 1-10 s in the
queue, and a quarter of them are throttled for 30-120 s more. Then they run:

- **uniform**: 20-300 s, uniformly spread;
- **lognormal**: ``exp(N(ln 60, 0.35^2))`` seconds, a skewed distribution with a median of 60 s
  and 90 % of run times between 33.8 and 106.6 s (its 5th and 95th percentiles).

The fake CometAPI and the poller share one :class:`FakeClock`, advanced in 1 s steps; at each
step the poller runs rounds until nothing is due. So a run takes seconds, and our delays are
rounded up to the step (a conservative error).

The baseline is the official Runway SDK's waiter: from creation, one poll every 6 s +/- 1.5 s
until the task is finished, simulated on the same scripts and the same clock (the fake server's
task model decides what each of its polls would have seen).

Polling alone, for both progress styles COMETAPI.md allows (``fine``: a real percentage;
``coarse``: only 0 %, 30 %, 100 %):

- **today**: the cadence without memory (``LEARN_RUN_TIMES`` off), the reference for "never
  worse" (also on the shifted workloads below: ``today x2``, ``today x0.5``);
- **history**: the site already has 200 successes of the same workload (the run times it
  learns from);
- **no history**: the same, starting with none;
- **misleading**: 200 successes from the workload, but tasks created in the second half of the
  minute run 2 x longer (``x2``) or 2 x shorter (``x0.5``).

Callbacks (uniform workload, coarse progress, tasks created through ``POST /runway/pro/generate``
with a callback URL; the fake server POSTs each callback to the site, served over HTTP, a
uniform 0-1 s after the finish; the callback view queues its poll, run at once by django-q2 in
sync mode). The site has seen callbacks arrive for its 20 latest finishes:

- **arriving**: every callback is sent;
- **20 % lost**: a fifth of them, drawn at random, are never sent;
- **stop**: every callback from 150 s on is lost; the fallback must engage by itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import random
import statistics
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
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
LOGNORMAL_MEDIAN, LOGNORMAL_SIGMA = 60.0, 0.35
HISTORY_ROWS = 200
# Callbacks: sent 0 to CALLBACK_DELAY s after the finish; in "stop", none from STOP_AT on.
CALLBACK_DELAY = 1.0
CALLBACK_LOSS = 0.2
STOP_AT = 150.0
MAX_POLL_INTERVAL = 60.0
MODEL = "gen4_turbo"


def scripts(count: int, style: str) -> list[tuple[float, Any]]:
    """(created_at, TaskScript) per task of the uniform workload, the same for every run."""
    return _workload(count, style, lambda rng: rng.uniform(20, 300), seed=20240611)


def lognormal_run(rng: random.Random) -> float:
    return math.exp(rng.gauss(math.log(LOGNORMAL_MEDIAN), LOGNORMAL_SIGMA))


def lognormal_scripts(count: int, style: str, *, shift: float = 1.0) -> list[tuple[float, Any]]:
    """The lognormal workload; tasks created after the first 30 s run ``shift`` x longer."""
    plans = _workload(count, style, lognormal_run, seed=20261130)
    return [
        (created, replace(script, run_for=script.run_for * shift))
        if created - START >= 30
        else (created, script)
        for created, script in plans
    ]


def _workload(count: int, style: str, run_for: Any, *, seed: int) -> list[tuple[float, Any]]:
    from django_runway_feed.testing import TaskScript

    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        created = START + rng.uniform(0, 60)
        throttled = rng.uniform(30, 120) if rng.random() < 0.25 else 0.0
        script = TaskScript(
            queued_for=rng.uniform(1, 10),
            throttled_for=throttled,
            run_for=run_for(rng),
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


def seed_history(
    run_times: Sequence[float],
    *,
    route: str = "tracked",
    request: dict[str, Any] | None = None,
    announced: bool | None = None,
) -> None:
    """Successes that finished before the simulation starts (the site's past).

    ``announced``: None for tasks created without a callback URL, else whether one came.
    """
    from django_runway_feed.models import RunwayTask

    end = dt.datetime.fromtimestamp(START, tz=dt.UTC)
    rows = []
    for index, seconds in enumerate(run_times):
        finished = end - dt.timedelta(seconds=60 + 5 * index)
        started = finished - dt.timedelta(seconds=seconds)
        rows.append(
            RunwayTask(
                task_id=f"past-{index:05d}",
                route=route,
                request=request or {},
                status="succeeded",
                progress=100,
                created_at=started,
                submitted_at=started,
                started_at=started,
                finished_at=finished,
                expects_callback=announced is not None,
                callback_at=finished + dt.timedelta(seconds=1) if announced else None,
            )
        )
    RunwayTask.objects.bulk_create(rows, batch_size=500)


def poll_until_finished(
    poller: Any,
    clock: Any,
    api: Any,
    finished: dict[str, float],
    *,
    each_step: Any = None,
) -> tuple[list[int], list[float], float, int]:
    """Poll on the fake clock until no task is unfinished (or 5,000 steps).

    ``each_step`` is called after every step's rounds; it returns True while it has tasks still
    to create. Returns the calls per task, the finish-to-seen delays, the simulated seconds and
    the requests the budget held back.
    """
    from django_runway_feed.models import RunwayTask

    steps = throttled = 0
    while steps < 5000:
        while True:
            summary = poller.run_round()
            throttled += summary.throttled
            if not summary.claimed:
                break
        creating = each_step() if each_step is not None else False
        if not creating and steps % 20 == 0 and not RunwayTask.objects.unfinished().exists():
            break
        clock.advance(STEP)
        steps += 1
    calls = [api.call_count(task_id) for task_id in finished]
    delays = list(seen_delays(finished).values())
    return calls, delays, steps * STEP, throttled


def seen_delays(finished: dict[str, float]) -> dict[str, float]:
    """Finish-to-seen delay per task that was seen (its last poll), in ``finished``'s order."""
    from django_runway_feed.models import RunwayTask

    seen = dict(
        RunwayTask.objects.filter(task_id__in=list(finished)).values_list(
            "task_id", "last_polled_at"
        )
    )
    return {
        task_id: seen[task_id].timestamp() - end
        for task_id, end in finished.items()
        if seen.get(task_id) is not None
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


@dataclass
class Outcome:
    """What one simulated run measured (sent back from its process)."""

    name: str
    sdk_calls: list[int]
    sdk_delays: list[float]
    calls: list[int]
    delays: list[float]
    extra: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def calls_vs_sdk(self) -> float:
        return statistics.mean(self.calls) / statistics.mean(self.sdk_calls)


def polling_alone(name: str, count: int) -> Outcome:
    """One polling-only run: ``<workload>-<style>-<policy>``."""
    from django_runway_feed.models import RunwayTask
    from django_runway_feed.polling import Poller
    from django_runway_feed.testing import FakeClock, FakeCometAPI

    workload, style, policy = name.split("-", 2)
    shift = 2.0 if policy.endswith(" x2") else 0.5 if policy.endswith(" x0.5") else 1.0
    if workload == "lognormal":
        plans = lognormal_scripts(count, style, shift=shift)
    else:
        plans = scripts(count, style)
    today = policy.startswith("today")
    configure_feed(CONCURRENCY=16, LEARN_RUN_TIMES=not today)
    if not today and policy != "no history":
        rng = random.Random(7)
        past = [
            lognormal_run(rng) if workload == "lognormal" else rng.uniform(20, 300)
            for _ in range(HISTORY_ROWS)
        ]
        seed_history(past)
    sdk_calls, sdk_delays = sdk_waiter(plans)
    clock = FakeClock(start=START)

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC)

    with FakeCometAPI(api_key=API_KEY, clock=clock) as api:
        configure_feed(BASE_URL=api.url)
        finished = track_plans(api, plans, prefix="eco")
        with Poller(clock=now) as poller:
            calls, delays, _seconds, _held = poll_until_finished(poller, clock, api, finished)
    RunwayTask.objects.all().delete()
    return Outcome(name, sdk_calls, sdk_delays, calls, delays, label=database_label())


@contextlib.contextmanager
def site_on_http() -> Iterator[str]:
    """Serve the Django site (its callback view) over HTTP in a thread; yields its base URL."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.wsgi import get_wsgi_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def with_callbacks(name: str, count: int) -> Outcome:
    """One run with callbacks: ``arriving``, ``lost`` or ``stop``."""
    from django.conf import settings
    from django.utils import timezone

    from django_runway_feed.models import RunwayTask
    from django_runway_feed.polling import Poller
    from django_runway_feed.testing import FakeClock, FakeCometAPI
    from django_runway_feed.testing.tasks import FakeTask

    rng = random.Random(18)
    plans = [
        (
            created,
            replace(
                script,
                callback=not (name == "lost" and rng.random() < CALLBACK_LOSS),
                callback_delay=rng.uniform(0, CALLBACK_DELAY),
            ),
        )
        for created, script in scripts(count, "coarse")
    ]
    sdk_calls, sdk_delays = sdk_waiter(plans)
    clock = FakeClock(start=START)

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC)

    request = {"model": MODEL, "options": {"seconds": 10}}
    past = [rng.uniform(20, 300) for _ in range(HISTORY_ROWS)]
    seed_history(past, route="generate", request=request, announced=True)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    logging.getLogger("django-q").setLevel(logging.WARNING)
    real_now = timezone.now
    # The callback view, its queued poll and the creates read the simulated clock too.
    timezone.now = now  # type: ignore[assignment]
    engaged_at: float | None = None
    try:
        with site_on_http() as site, FakeCometAPI(api_key=API_KEY, clock=clock) as api:
            configure_feed(
                BASE_URL=api.url,
                CONCURRENCY=16,
                CALLBACK_BASE_URL=site,
                MAX_POLL_INTERVAL=MAX_POLL_INTERVAL,
            )
            pending = sorted(plans, key=lambda plan: plan[0])
            finished: dict[str, float] = {}
            with Poller() as poller:

                def each_step() -> bool:
                    nonlocal engaged_at
                    at = clock.now()
                    while pending and pending[0][0] <= at:
                        _created, script = pending.pop(0)
                        api.script_next(script)
                        task = RunwayTask.objects.generate(
                            "a lighthouse at dusk", model=MODEL, seconds=10
                        )
                        assert task.task_id is not None
                        finished[task.task_id] = FakeTask(task.task_id, script, at, "").finished_at
                    if name != "stop" or at < START + STOP_AT:
                        api.deliver_callbacks()
                    elif engaged_at is None and not poller.hindsight.verdict.live:
                        engaged_at = at
                    return bool(pending)

                calls, delays, _seconds, _held = poll_until_finished(
                    poller, clock, api, finished, each_step=each_step
                )
                delay_of = seen_delays(finished)
                delivered = {delivery.task_id for delivery in api.callback_deliveries}
    finally:
        timezone.now = real_now  # type: ignore[assignment]
    extra: dict[str, Any] = {
        "lost_delays": [delay_of[task_id] for task_id in finished if task_id not in delivered],
    }
    if name == "stop":
        extra["engaged_after"] = None if engaged_at is None else engaged_at - (START + STOP_AT)
        extra["after_engaged"] = [
            delay_of[task_id]
            for task_id, end in finished.items()
            if engaged_at is not None and end >= engaged_at
        ]
    return Outcome(name, sdk_calls, sdk_delays, calls, delays, extra, label=database_label())


def run_one(queue: Any, kind: str, name: str, count: int) -> None:
    """In a subprocess with its own database: one simulated run."""
    random.seed(name)  # the poller's jitter: the same draws on every run of the script
    with bench_database():
        outcome = polling_alone(name, count) if kind == "alone" else with_callbacks(name, count)
        queue.put(outcome)


POLLING_RUNS = (
    "uniform-fine-today",
    "uniform-fine-history",
    "uniform-coarse-today",
    "uniform-coarse-history",
    "lognormal-coarse-today",
    "lognormal-coarse-history",
    "lognormal-coarse-no history",
    "lognormal-coarse-today x2",
    "lognormal-coarse-misleading x2",
    "lognormal-coarse-today x0.5",
    "lognormal-coarse-misleading x0.5",
    "lognormal-fine-today",
    "lognormal-fine-history",
)
CALLBACK_RUNS = ("arriving", "lost", "stop")


def run_all(count: int, *, parallel: int = 2) -> dict[str, Outcome]:
    """Every run, each in its own process and database, ``parallel`` at a time."""
    jobs = [("alone", name) for name in POLLING_RUNS] + [("callbacks", n) for n in CALLBACK_RUNS]
    queue = MP.Queue()
    outcomes: dict[str, Outcome] = {}
    processes = []
    active = 0
    while jobs or active:
        while jobs and active < parallel:
            kind, name = jobs.pop(0)
            process = MP.Process(target=run_one, args=(queue, kind, name, count))
            process.start()
            processes.append(process)
            active += 1
        outcome = queue.get(timeout=900)
        outcomes[outcome.name] = outcome
        active -= 1
    for process in processes:
        process.join(timeout=30)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    count = 60 if args.quick else 1000
    outcomes = run_all(count)
    label = next(iter(outcomes.values())).label
    rows: list[tuple[object, ...]] = []
    for name in POLLING_RUNS:
        workload, style, policy = name.split("-", 2)
        out = outcomes[name]
        if policy.startswith("today"):
            rows.append(
                (
                    workload,
                    style,
                    "SDK waiter" + policy.removeprefix("today"),
                    statistics.mean(out.sdk_calls),
                    1.0,
                    p95(out.sdk_delays),
                    max(out.sdk_delays),
                )
            )
        rows.append(
            (
                workload,
                style,
                policy,
                statistics.mean(out.calls),
                out.calls_vs_sdk,
                p95(out.delays),
                max(out.delays),
            )
        )
    print_table(
        f"Polling alone on {label}, {count} tasks per run",
        ("run times", "progress", "policy", "calls/task", "x SDK", "p95 delay s", "max delay s"),
        rows,
    )
    rows = []
    for name in CALLBACK_RUNS:
        out = outcomes[name]
        lost = out.extra["lost_delays"]
        rows.append(
            (
                name,
                statistics.mean(out.calls),
                out.calls_vs_sdk,
                p95(out.delays),
                max(out.delays),
                len(lost),
                p95(lost) if len(lost) > 1 else "-",
            )
        )
    print_table(
        f"Callbacks (uniform run times, coarse progress) on {label}",
        ("callbacks", "calls/task", "x SDK", "p95 delay s", "max delay s", "lost", "lost p95 s"),
        rows,
    )
    stop = outcomes["stop"].extra
    print(f"  stop: the fallback engaged {stop['engaged_after']} s after the last callback")

    def by(name: str) -> Outcome:
        return outcomes[name]

    for style in ("fine", "coarse"):
        out = by(f"uniform-{style}-history")
        goal(f"economy_{style}_calls_vs_sdk", out.calls_vs_sdk, 0.5, at_most=True, unit="x")
        goal(f"economy_{style}_p95_delay", p95(out.delays), 10, at_most=True, unit="s")
    out = by("lognormal-coarse-history")
    goal("economy_history_calls_vs_sdk", out.calls_vs_sdk, 0.45, at_most=True, unit="x")
    goal("economy_history_p95_delay", p95(out.delays), 10, at_most=True, unit="s")
    for policy, reference in (
        ("no history", "today"),
        ("misleading x2", "today x2"),
        ("misleading x0.5", "today x0.5"),
    ):
        out, today = by(f"lognormal-coarse-{policy}"), by(f"lognormal-coarse-{reference}")
        key = policy.replace(" ", "_").replace(".", "")
        goal(
            f"economy_{key}_calls_vs_today",
            statistics.mean(out.calls) / statistics.mean(today.calls),
            1.0,
            at_most=True,
            unit="x",
        )
        goal(
            f"economy_{key}_p95_delay",
            p95(out.delays),
            max(10.0, p95(today.delays)),
            at_most=True,
            unit="s",
        )
    fine_today, fine = by("lognormal-fine-today"), by("lognormal-fine-history")
    goal(
        "economy_fine_history_calls_vs_today",
        statistics.mean(fine.calls) / statistics.mean(fine_today.calls),
        1.0,
        at_most=True,
        unit="x",
    )
    arriving = by("arriving")
    goal("economy_callbacks_calls_vs_sdk", arriving.calls_vs_sdk, 0.15, at_most=True, unit="x")
    goal("economy_callbacks_p95_delay", p95(arriving.delays), 3, at_most=True, unit="s")
    lost = by("lost").extra["lost_delays"]
    goal(
        "economy_lost_callbacks_p95_delay",
        p95(lost) if len(lost) > 1 else max(lost, default=0.0),
        MAX_POLL_INTERVAL,
        at_most=True,
        unit="s",
    )
    engaged = stop["engaged_after"]
    goal(
        "economy_fallback_engaged_after",
        math.inf if engaged is None else engaged,
        2 * MAX_POLL_INTERVAL,
        at_most=True,
        unit="s",
    )
    after = stop["after_engaged"]
    goal(
        "economy_fallback_p95_delay",
        p95(after) if len(after) > 1 else max(after, default=math.inf),
        10,
        at_most=True,
        unit="s",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
