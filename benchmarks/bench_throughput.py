"""Goals 1 and 2: polls per second of one poll run, against a naive loop and a raw HTTP loop.

Goal 1 (throughput): 2,000 due tasks, fake API latency 100 ms, ``CONCURRENCY`` 16. Our poll run
must reach 0.9 x the latency limit (16 / 0.1 s = 160/s) and 15 x the naive baseline: a
sequential loop doing one ``requests.post`` and one ``save()`` per task, as a hand-written cron
job would (measured on a sample, since it is linear and would take minutes on all 2,000).

Goal 2 (overhead): the same tasks with no added latency. Our polls per second must reach 0.6 x a
raw loop that only sends the same feed requests over the same pooled session with the same
concurrency (no database, no parsing). Both are run twice, alternately; the best run counts.
Goal 1 runs under the default request budget (``MAX_REQUESTS_PER_SECOND`` 200, above the 160/s
limit); goal 2 measures the poller's own overhead against an unlimited raw loop, so it turns the
budget off (``None``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks.common import (
    API_KEY,
    RemoteFakeAPI,
    bench_database,
    configure_feed,
    database_label,
    frozen_clock,
    goal,
    make_due,
    parse_args,
    poll_until_idle,
    print_table,
    seed_tasks,
    task_ids,
)

CONCURRENCY = 16
LATENCY = 0.1


def naive_loop(base_url: str, ids: Sequence[str], *, now: dt.datetime) -> float:
    """The baseline of goal 1: one POST and one save() per task, in sequence. Polls/s."""
    from django_runway_feed.models import RunwayTask

    started = time.perf_counter()
    for task in RunwayTask.objects.filter(task_id__in=list(ids)).order_by("pk"):
        response = requests.post(
            f"{base_url}/runway/feed",
            json={"task_id": task.task_id},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
        data = response.json().get("data") or {}
        task.provider_status = str(data.get("status") or "")
        task.progress = int(str(data.get("progress") or "0").rstrip("%") or 0)
        task.last_polled_at = now
        task.next_poll_at = now + dt.timedelta(seconds=5)
        task.poll_count += 1
        task.save()
    return len(ids) / (time.perf_counter() - started)


def raw_loop(session: requests.Session, base_url: str, ids: Sequence[str]) -> float:
    """The baseline of goal 2: the feed requests alone, concurrently, on a pooled session."""

    def one(task_id: str) -> bytes:
        response = session.post(f"{base_url}/runway/feed", json={"task_id": task_id}, timeout=30)
        return response.content

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        for _body in pool.map(one, ids):
            pass
    return len(ids) / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    tasks = 300 if args.quick else 2000
    naive_sample = 20 if args.quick else 100
    rows: list[tuple[object, ...]] = []
    with bench_database():
        from django.utils import timezone

        from django_runway_feed.polling import Poller

        configure_feed(CONCURRENCY=CONCURRENCY)
        ids = task_ids("tput", tasks)
        naive_ids = task_ids("naive", naive_sample)

        # Goal 1 --------------------------------------------------------------------------
        with RemoteFakeAPI(latency=LATENCY, prefix="tput", count=tasks) as api:
            naive_api = RemoteFakeAPI(latency=LATENCY, prefix="naive", count=naive_sample)
            with naive_api:
                now = timezone.now()
                seed_tasks(naive_ids, now=now, due_at=now + dt.timedelta(days=1))
                naive_rate = naive_loop(naive_api.url, naive_ids, now=now)
            seed_tasks(ids, now=now)
            configure_feed(BASE_URL=api.url)
            with Poller(clock=frozen_clock(now)) as poller:
                polled, seconds = poll_until_idle(poller)
            ours = polled / seconds
            counts = api.counts()
        twice = sum(1 for n in counts.values() if n > 1)
        rows.append(("100 ms", "naive: POST + save() per task", naive_sample, naive_rate))
        rows.append(("100 ms", f"poller, CONCURRENCY={CONCURRENCY}", polled, ours))

        # Goal 2 --------------------------------------------------------------------------
        raw_best = poller_best = 0.0
        with RemoteFakeAPI(latency=0.0, prefix="tput", count=tasks) as api:
            configure_feed(BASE_URL=api.url, MAX_REQUESTS_PER_SECOND=None)
            for _attempt in range(2):
                now = timezone.now()
                make_due(now)
                with Poller(clock=frozen_clock(now)) as poller:
                    raw_best = max(raw_best, raw_loop(poller.client.session, api.url, ids))
                    polled0, seconds0 = poll_until_idle(poller)
                poller_best = max(poller_best, polled0 / seconds0)
        rows.append(("0 ms", "raw HTTP loop, same session", tasks, raw_best))
        rows.append(("0 ms", f"poller, CONCURRENCY={CONCURRENCY}", polled0, poller_best))

        print_table(
            f"Throughput on {database_label()}, {tasks} due tasks",
            ("latency", "what", "tasks", "polls/s"),
            rows,
        )
        print(f"  tasks polled more than once in the 100 ms run: {twice}")
        limit = CONCURRENCY / LATENCY
        goal("throughput", ours, 0.9 * limit, unit="polls/s")
        goal("throughput_vs_naive", ours / naive_rate, 15, unit="x")
        goal("overhead_vs_raw_http", poller_best / raw_best, 0.6, unit="x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
