"""Goal 4: peak RSS of a poll run stays flat as the number of unfinished tasks grows 10x.

"A poll run" here is what the scheduled job does, cut to a fixed number of batches so it is
bounded in time: ``outbox.sweep()``, then ``ROUNDS`` x ``Poller.run_round()`` (claim
``BATCH_SIZE`` due tasks, ask the feed, write the answers), then the idle-time query
``seconds_until_due()`` and the heartbeat. Each run happens in a fresh ``spawn`` subprocess,
so its peak RSS (``ru_maxrss``) holds nothing but Django, the poller and what the run loaded;
the fake CometAPI serves from yet another process. Every row is unfinished and due.

The baseline is the naive job's first line, ``list(RunwayTask.objects.unfinished())``, measured
the same way: it grows with the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    MP,
    RemoteFakeAPI,
    bench_database,
    configure_feed,
    database_label,
    goal,
    parse_args,
    peak_rss_mb,
    print_table,
    seed_tasks,
    setup_django,
    task_ids,
)


def measure(queue: Any, mode: str, base_url: str, rounds: int) -> None:
    """In a fresh subprocess: one poll run (or the naive load); report peak RSS in MiB."""
    setup_django()
    from django.utils import timezone

    from django_runway_feed import outbox
    from django_runway_feed.models import RunwayTask
    from django_runway_feed.polling import Poller, PollSummary, record_heartbeat

    configure_feed(BASE_URL=base_url)
    before = peak_rss_mb()
    polled = 0
    if mode == "naive":
        polled = len(list(RunwayTask.objects.unfinished()))
    else:
        now = timezone.now()
        with Poller(clock=lambda: now) as poller:
            outbox.sweep(now=now)
            total = PollSummary()
            for _ in range(rounds):
                total.add(poller.run_round())
            poller.seconds_until_due(now)
            record_heartbeat(total, now=now)
            polled = total.polled
    queue.put((before, peak_rss_mb(), polled))


def run_child(mode: str, base_url: str, rounds: int) -> tuple[float, float, int]:
    queue = MP.Queue()
    process = MP.Process(target=measure, args=(queue, mode, base_url, rounds))
    process.start()
    result: tuple[float, float, int] = queue.get(timeout=300)
    process.join(timeout=30)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    small, large = (2_000, 20_000) if args.quick else (10_000, 100_000)
    rounds = 3 if args.quick else 10
    rows: list[tuple[object, ...]] = []
    peaks: dict[int, float] = {}
    with bench_database():
        from django.utils import timezone

        ids = task_ids("mem", large)
        with RemoteFakeAPI(latency=0.0, prefix="mem", count=large) as api:
            now = timezone.now()
            seeded = 0
            for size in (small, large):
                seed_tasks(ids[seeded:size], now=now - dt.timedelta(seconds=1))
                seeded = size
                before, peak, polled = run_child("poll", api.url, rounds)
                peaks[size] = peak
                rows.append((f"{size:,}", f"poll run ({rounds} batches)", polled, before, peak))
                before, peak, loaded = run_child("naive", api.url, rounds)
                rows.append((f"{size:,}", "naive: load every unfinished row", loaded, before, peak))
        print_table(
            f"Peak RSS on {database_label()}",
            ("unfinished", "run", "tasks", "RSS after setup MiB", "peak RSS MiB"),
            rows,
        )
        goal("memory_ratio", peaks[large] / peaks[small], 1.10, at_most=True, unit="x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
