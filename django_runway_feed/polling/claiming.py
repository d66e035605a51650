"""Claiming due tasks under a lease, so that concurrent workers never take the same rows.

A claim leases up to a batch of due tasks to one owner token, in one short statement or
transaction: ``UPDATE ... RETURNING`` where the database has it (on PostgreSQL over rows locked
with ``FOR UPDATE SKIP LOCKED``), otherwise a locked ``SELECT`` or a conditional ``UPDATE`` and
a read back. Every write of a round is then conditional on that lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import QuerySet

from ..conf import conf
from ..dbfeatures import supports_update_returning
from ..models import RunwayTask


def claim(
    owner: str,
    *,
    now: dt.datetime,
    limit: int,
    task_ids: Iterable[int] | None = None,
    due_only: bool = True,
) -> list[RunwayTask]:
    """Lease up to ``limit`` due tasks to ``owner``.

    ``task_ids`` restricts the claim to those rows; ``due_only=False`` takes them even
    before their next poll time (a manual poll), never from under another live lease.
    """
    expires = now + dt.timedelta(seconds=conf.LEASE_SECONDS)
    candidates = RunwayTask.objects.pollable().unleased(now)
    if task_ids is not None:
        candidates = candidates.filter(pk__in=list(task_ids))
    if due_only:
        candidates = candidates.filter(next_poll_at__lte=now)
    candidates = candidates.order_by("next_poll_at")
    if supports_update_returning():
        return _claim_returning(candidates, owner, expires, limit)
    # A locked database (SQLite's "database is locked" under several writers) raises here;
    # the run's guard makes it an empty round and waits a moment before the next.
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(
                candidates.select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit]
            )
            if ids:
                RunwayTask.objects.filter(pk__in=ids).update(
                    lease_owner=owner, lease_expires_at=expires
                )
    else:
        # The UPDATE re-checks every condition: atomic where writes are serialised, so a
        # row another worker took since the SELECT is not leased (nor read back) here.
        ids = list(candidates.values_list("pk", flat=True)[:limit])
        if ids:
            RunwayTask.objects.filter(pk__in=ids).pollable().unleased(now).update(
                lease_owner=owner, lease_expires_at=expires
            )
    if not ids:
        return []
    # Read back by primary key: lease_owner has no index, and filtering on it alone scans
    # the whole table (most of a round's database time at a million rows).
    leased = RunwayTask.objects.filter(pk__in=ids, lease_owner=owner)
    return list(leased.order_by("next_poll_at"))


def _claim_returning(
    candidates: QuerySet[RunwayTask], owner: str, expires: dt.datetime, limit: int
) -> list[RunwayTask]:
    """Lease and read the batch in one ``UPDATE ... RETURNING``, without a transaction.

    On PostgreSQL the candidates are locked (``FOR UPDATE SKIP LOCKED``) in a materialized
    CTE, so the statement leases exactly the rows it locked and two workers never take the
    same row; SQLite runs one statement at a time. Rows are found by the due index and
    written by primary key: nothing reads ``lease_owner``, which has no index.
    """
    meta = RunwayTask._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    pk = f"{table}.{quote(str(meta.pk.column))}"
    chosen, params = (
        candidates.values("pk")[:limit].query.get_compiler(connection=connection).as_sql()
    )
    assignments = f"{quote('lease_owner')} = %s, {quote('lease_expires_at')} = %s"
    values = [owner, connection.ops.adapt_datetimefield_value(expires)]
    if connection.vendor == "postgresql":
        sql = (
            f"WITH claimed AS MATERIALIZED ({chosen} FOR UPDATE SKIP LOCKED) "  # noqa: S608
            f"UPDATE {table} SET {assignments} FROM claimed "
            f"WHERE {pk} = claimed.{quote('pk')} RETURNING {table}.*"
        )
        tasks = list(RunwayTask.objects.raw(sql, [*params, *values]))
    else:
        sql = f"UPDATE {table} SET {assignments} WHERE {pk} IN ({chosen}) RETURNING *"  # noqa: S608
        tasks = list(RunwayTask.objects.raw(sql, [*values, *params]))
    tasks.sort(key=lambda task: (task.next_poll_at or expires, task.pk))
    return tasks


def release(owner: str, task_pks: list[int]) -> None:
    """Make rows still leased to ``owner`` claimable again at once (a pause, a lost race)."""
    # By primary key first: lease_owner alone has no index.
    RunwayTask.objects.filter(pk__in=task_pks, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None
    )


def seconds_until_due(now: dt.datetime) -> float | None:
    """Seconds until the earliest pollable task is due (0 if one is due), None if none."""
    soonest = (
        RunwayTask.objects.pollable()
        .filter(next_poll_at__isnull=False)
        .order_by("next_poll_at")
        .values_list("next_poll_at", flat=True)
        .first()
    )
    if soonest is None:
        return None
    return max(0.0, (soonest - now).total_seconds())
