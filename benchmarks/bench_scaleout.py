"""Goal 6: two poll processes on PostgreSQL reach 1.7 x one process's throughput.

Fake API latency 100 ms, ``CONCURRENCY`` 16 per process. First one process drains the due tasks
(one ``Poller.run(window=0)``), then, with every task due again, two processes start together
and drain them; throughput is tasks over the time from the first start to the last end. The fake
server counts the feed calls per task: no task may be polled twice in a drain. Each process sets
Django up before the start signal, so startup is not measured. SQLite serialises writers, so
there this benchmark reports n/a. It measures capacity, so the shared request budget
(``MAX_REQUESTS_PER_SECOND``, which would cap both processes together) is off (``None``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    MP,
    RemoteFakeAPI,
    bench_database,
    configure_feed,
    database_label,
    goal,
    make_due,
    on_postgres,
    parse_args,
    print_table,
    seed_tasks,
    setup_django,
    task_ids,
)

CONCURRENCY = 16
LATENCY = 0.1


def poll_process(queue: Any, start: Any, base_url: str, frozen: float) -> None:
    """One poll run in its own process, started when ``start`` is set."""
    import datetime as dt

    setup_django()
    from django_runway_feed.polling import Poller

    configure_feed(BASE_URL=base_url, CONCURRENCY=CONCURRENCY, MAX_REQUESTS_PER_SECOND=None)
    moment = dt.datetime.fromtimestamp(frozen, tz=dt.UTC)
    with Poller(clock=lambda: moment) as poller:
        queue.put("ready")
        start.wait(60)
        began = time.time()
        summary = poller.run(window=0)
        queue.put((began, time.time(), summary.polled))


def drain(processes: int, base_url: str, frozen: float) -> tuple[float, int]:
    """Tasks per second and tasks polled by ``processes`` poll runs started together."""
    queue, start = MP.Queue(), MP.Event()
    workers = [
        MP.Process(target=poll_process, args=(queue, start, base_url, frozen))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert queue.get(timeout=120) == "ready"
    start.set()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    began = min(result[0] for result in results)
    ended = max(result[1] for result in results)
    polled = sum(result[2] for result in results)
    return polled / (ended - began), polled


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    tasks = 400 if args.quick else 2000
    if not on_postgres():
        print("scale-out needs PostgreSQL (SELECT ... FOR UPDATE SKIP LOCKED): set DATABASE_URL")
        goal("scaleout", None, 1.7, unit="x")
        goal("scaleout_polled_twice", None, 0, at_most=True, unit="tasks")
        return 0
    with bench_database():
        from django.utils import timezone

        ids = task_ids("scale", tasks)
        with RemoteFakeAPI(latency=LATENCY, prefix="scale", count=tasks) as api:
            now = timezone.now()
            seed_tasks(ids, now=now)
            one, polled_one = drain(1, api.url, now.timestamp())
            after_one = api.counts()
            make_due(now)
            two, polled_two = drain(2, api.url, now.timestamp())
            after_two = api.counts()
        twice_one = sum(1 for n in after_one.values() if n > 1)
        twice_two = sum(1 for n in (after_two - after_one).values() if n > 1)
        print_table(
            f"Scale-out on {database_label()}, {tasks} due tasks, {LATENCY * 1000:.0f} ms latency",
            ("poll processes", "tasks polled", "polls/s", "tasks polled twice"),
            [(1, polled_one, one, twice_one), (2, polled_two, two, twice_two)],
        )
        goal("scaleout", two / one, 1.7, unit="x")
        goal("scaleout_polled_twice", twice_one + twice_two, 0, at_most=True, unit="tasks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
