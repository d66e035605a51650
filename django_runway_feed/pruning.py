"""Delete old finished tasks in small batches, in constant memory, while the poller runs.

A batch is a list of primary keys read with ``values_list`` (keyset pagination on ``(created_at,
pk)``, so no OFFSET scans and nothing beyond one batch is ever held). Each batch is deleted in
its own short transaction: the rows are locked (``SELECT ... FOR UPDATE`` on PostgreSQL), their
events are deleted, then the tasks, and every ``DELETE`` repeats the conditions (a terminal
status, old enough, no undelivered signal) in its ``WHERE`` clause. The poller only ever writes
unfinished rows, so the two never touch the same row; a task an operator reopens in between is
simply not deleted; a newer task resubmitted from a pruned one loses only that link. Stored
files (video, poster, last frame) are removed from ``RUNWAY_FEED['STORAGE']`` after the batch
commits, so a rollback never leaves a row pointing at a deleted file.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from django.core.files.storage import storages
from django.db import router, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .conf import conf
from .models import RunwayTask, RunwayTaskQuerySet, TaskEvent
from .statuses import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500


@dataclass
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    tasks: int = 0
    events: int = 0
    files: int = 0
    file_errors: int = 0
    batches: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prunable(
    *, cutoff: dt.datetime, statuses: Iterable[str] = TERMINAL_STATUSES
) -> RunwayTaskQuerySet:
    """Finished tasks created before ``cutoff``."""
    # created_at rather than finished_at: it is indexed with status, and a task finishes at
    # most TASK_TIMEOUT after it was created, which is nothing next to a retention in days.
    return RunwayTask.objects.filter(status__in=list(statuses), created_at__lt=cutoff)


def _delivered(tasks: RunwayTaskQuerySet) -> RunwayTaskQuerySet:
    # A task whose last transition is not signalled yet stays until the outbox delivers it.
    # Applied per batch only (in the DELETEs), not while paging: it is a subquery per row.
    undelivered = TaskEvent.objects.filter(task=OuterRef("pk"), dispatched_at__isnull=True)
    return tasks.exclude(Exists(undelivered))


def _statuses(statuses: Iterable[str] | None) -> list[str]:
    chosen = sorted(TERMINAL_STATUSES if statuses is None else set(statuses))
    unfinished = [status for status in chosen if status not in TERMINAL_STATUSES]
    if unfinished or not chosen:
        raise ValueError(
            f"Only finished tasks can be pruned; got {', '.join(unfinished) or 'no status'}. "
            f"Choose among: {', '.join(sorted(TERMINAL_STATUSES))}."
        )
    return chosen


def prune_finished_tasks(
    *,
    days: float,
    statuses: Iterable[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    on_batch: Callable[[PruneResult], None] | None = None,
) -> PruneResult:
    """Delete finished tasks created more than ``days`` ago, with their events and files.

    ``statuses`` narrows the terminal statuses pruned (all three by default); ``max_batches``
    stops early (the scheduled job prunes one batch per run); ``dry_run`` counts instead of
    deleting. ``on_batch`` is called with the running totals after each batch.
    """
    if days <= 0:
        raise ValueError("days must be positive.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    chosen = _statuses(statuses)
    now = now or timezone.now()
    selected = prunable(cutoff=now - dt.timedelta(days=days), statuses=chosen)
    result = PruneResult(dry_run=dry_run)
    last: _Key | None = None
    while max_batches is None or result.batches < max_batches:
        last = _prune_batch(selected, after=last, size=batch_size, dry_run=dry_run, result=result)
        if last is None:
            break
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    if result.tasks and not dry_run:
        logger.info(
            "Pruned %d finished Runway task(s), %d event(s), %d file(s)",
            result.tasks,
            result.events,
            result.files,
        )
    return result


def _stored_names(rows: RunwayTaskQuerySet) -> list[str]:
    """Every stored file of ``rows``: the video, the poster and the rest of ``stored_files``."""
    names: set[str] = set()
    stored = rows.exclude(output_file="", poster_file="", stored_files=[])
    for video, poster, files in stored.values_list("output_file", "poster_file", "stored_files"):
        names.update(name for name in (video, poster) if name)
        for entry in files if isinstance(files, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
                names.add(entry["name"])
    return sorted(names)


# Where a page ends: (created_at, pk) of its last row.
_Key = tuple[dt.datetime, int]


def _page_after(selected: RunwayTaskQuerySet, after: _Key | None) -> RunwayTaskQuerySet:
    """``selected`` past ``after``, oldest first.

    In creation order, not primary-key order: the range ends at the cutoff, so the (status,
    created_at) and created_at indexes find an empty page at once. A page in key order walked
    the rest of the key's index when nothing was left to prune (most scheduled runs).
    """
    if after is not None:
        created, pk = after
        selected = selected.filter(
            Q(created_at__gt=created) | Q(created_at=created, pk__gt=pk), created_at__gte=created
        )
    return selected.order_by("created_at", "pk")


def _prune_batch(
    selected: RunwayTaskQuerySet,
    *,
    after: _Key | None,
    size: int,
    dry_run: bool,
    result: PruneResult,
) -> _Key | None:
    """Prune the next ``size`` rows of ``selected`` past ``after``; return the last key seen.

    Returns None when no row is left.
    """
    using = router.db_for_write(RunwayTask)
    with transaction.atomic(using=using):
        # Page and lock in one statement (FOR UPDATE on PostgreSQL): a concurrent reopen of one
        # of these tasks waits for this short transaction instead of racing it.
        page = _page_after(selected, after)
        if not dry_run:
            page = page.select_for_update()
        keys = list(page.values_list("created_at", "pk")[:size])
        if not keys:
            return None
        pks = [pk for _created, pk in keys]
        rows = _delivered(selected.filter(pk__in=pks))
        events = TaskEvent.objects.filter(task__in=rows)
        names = _stored_names(rows)
        if dry_run:
            result.tasks += rows.count()
            result.events += events.count()
            result.files += len(names)
            return keys[-1]
        # _raw_delete is the single-statement DELETE Django itself uses for cascades: it keeps
        # the WHERE clause above (delete() would collect and reload every row first) and sends
        # no per-row signals, which is what makes a batch cheap.
        result.events += events._raw_delete(using)
        # A newer task resubmitted from a pruned one keeps living; its link is cleared (the
        # database would refuse the DELETE otherwise, as Django's SET_NULL is not in it).
        RunwayTask.objects.filter(resubmitted_from__in=rows).update(resubmitted_from=None)
        result.tasks += rows._raw_delete(using)
    if names:
        storage = storages[conf.STORAGE]
        for name in names:
            try:
                storage.delete(name)
            except Exception:
                # An orphaned file is harmless; a failed prune run would retry forever.
                logger.warning("Could not delete stored output %r", name, exc_info=True)
                result.file_errors += 1
            else:
                result.files += 1
    return keys[-1]
