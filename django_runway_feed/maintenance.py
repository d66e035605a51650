"""The chores after each scheduled poll run: mark stuck tasks, prune, queue due downloads.

:func:`run_maintenance` is called by :func:`django_runway_feed.services.poll_due_tasks` once the
run's polling is done. Unlike :mod:`django_runway_feed.health`, which only reads, these change
data.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial

from django.db import transaction
from django.utils import timezone

from . import outbox, signals
from .conf import conf
from .downloads import queue_due_downloads
from .models import RunwayTask
from .pruning import prune_finished_tasks

logger = logging.getLogger(__name__)


# Tasks marked stale per run: a backlog (a first deploy over old rows) drains over a few runs
# instead of making one run send thousands of signals.
STALE_BATCH = 500


def _send_stale(task_pk: int) -> None:
    task = RunwayTask.objects.filter(pk=task_pk).first()
    if task is not None:  # pruned or deleted between the commit and now
        outbox.send(signals.task_stale, task=task)


def mark_stale_tasks(*, now: dt.datetime | None = None, limit: int = STALE_BATCH) -> int:
    """Set ``stale_at`` on newly stuck tasks and send ``task_stale`` once for each.

    Each mark is a conditional ``UPDATE ... WHERE stale_at IS NULL`` that re-checks the task is
    still stuck, so of two concurrent workers only one sends; the signal goes out after commit.
    Returns how many tasks this call marked.
    """
    now = now or timezone.now()
    candidates = list(
        RunwayTask.objects.stuck(now)
        .filter(stale_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    marked = 0
    for pk in candidates:
        with transaction.atomic():
            won = (
                RunwayTask.objects.stuck(now)
                .filter(pk=pk, stale_at__isnull=True)
                .update(stale_at=now)
            )
            if won:
                transaction.on_commit(partial(_send_stale, pk), robust=True)
                marked += 1
    if marked:
        logger.warning("%d Runway task(s) became stuck (task_stale sent)", marked)
    return marked


def run_maintenance(*, now: dt.datetime | None = None) -> None:
    """After a poll run: mark stuck tasks, prune one batch when PRUNE_AFTER_DAYS is set, and
    queue the result downloads whose retry time has come (DOWNLOAD_RESULTS).

    A failure here is logged, never raised: the poll run it follows has already done its work
    and must not be reported (or retried by django-q2) as failed.
    """
    now = now or timezone.now()
    try:
        mark_stale_tasks(now=now)
    except Exception:
        logger.exception("Marking stuck Runway tasks failed")
    days = conf.PRUNE_AFTER_DAYS
    if days:
        try:
            prune_finished_tasks(days=days, max_batches=1, now=now)
        except Exception:
            logger.exception("Pruning finished Runway tasks failed")
    try:
        # Real time, not the run's clock: the download job checks due-ness against it too.
        queue_due_downloads()
    except Exception:
        logger.exception("Queuing due result downloads failed")
