"""Every status change of a task, written in one place.

A status moves forward only, by the ranks of :data:`~django_runway_feed.statuses.RANK`:
``submitting`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``, a step
allowed to skip ranks (a task may finish before it was ever seen running) and never to stay on
one. The one sanctioned backward move is an operator resuming a given-up task (``failed`` ->
``queued``), which its caller asks for by name with ``reopen=True``.

:func:`change_status` is the only code that writes a status change: poll results and give-ups
(the poller), create results (the services), stop and resume (the operator actions). In one
transaction it makes the conditional ``UPDATE`` (on the status read, and on the lease when the
caller holds one), so a late or concurrent writer never overwrites newer state, and writes the
change's ``TaskEvent`` through the outbox: a transition, whose signals are sent after commit,
or for a reopen a ``resumed`` note, which carries no signal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from . import outbox
from .exceptions import RunwayFeedError
from .models import EventKind, RunwayTask
from .statuses import Status, is_forward

# The backward moves an operator may ask for: resuming a given-up task.
REOPENINGS = frozenset({(Status.FAILED, Status.QUEUED)})


class DisallowedTransition(RunwayFeedError):
    """A caller asked for a status change the forward-only rule forbids: a bug, never data."""


def is_allowed(current: str, new: str, *, reopen: bool = False) -> bool:
    """Whether a task may move from ``current`` to ``new``.

    Forward only (``statuses.is_forward``), unless ``reopen``: then only a move in
    :data:`REOPENINGS`, and never a forward one (a reopen is recorded differently).
    """
    if reopen:
        return (current, new) in REOPENINGS
    return is_forward(current, new)


def change_status(
    task: RunwayTask,
    status: str,
    *,
    now: dt.datetime,
    values: Mapping[str, Any] | None = None,
    lease_owner: str | None = None,
    where: Mapping[str, Any] | None = None,
    message: str = "",
    payload: Any = None,
    reopen: bool = False,
) -> bool:
    """Move ``task`` from the status it was read with to ``status``; False if it moved meanwhile.

    ``values`` are the other fields written with the status (``updated_at`` is ``now`` unless
    given). The ``UPDATE`` is conditional on the status read (``task.status``), on
    ``lease_owner`` when given (a poll's answer is written only while its lease holds) and on
    the fields of ``where`` (their values as read). When it matches no row nothing is written
    and no event recorded.

    The event goes from the status read to ``status`` with the progress written (the task's,
    when ``values`` holds none), ``message`` and ``payload``, at ``now``; it is signalled after
    commit. With ``reopen`` it is a ``resumed`` note instead, which sends no signal: receivers
    hear of the task's next real transition.

    ``task`` is left as read, its status included; a caller that needs the new row refreshes
    it. Raises :class:`DisallowedTransition` for a move :func:`is_allowed` forbids.
    """
    previous = task.status
    if not is_allowed(previous, status, reopen=reopen):
        raise DisallowedTransition(
            f"Task #{task.pk} cannot move from {previous} to {status}: a status only moves "
            "forward, and only resuming a given-up task (reopen=True) moves it back."
        )
    written = {"updated_at": now, **(values or {})}
    conditions: dict[str, Any] = {**(where or {}), "pk": task.pk, "status": previous}
    if lease_owner is not None:
        conditions["lease_owner"] = lease_owner
    with transaction.atomic():
        changed = RunwayTask.objects.filter(**conditions).update(status=status, **written)
        if not changed:
            return False
        if reopen:
            outbox.record_note(
                task, EventKind.RESUMED, message, payload=payload, to_status=status, now=now
            )
        else:
            outbox.record_transition(
                task,
                previous=previous,
                status=status,
                progress=written.get("progress", task.progress),
                message=message,
                payload=payload,
                now=now,
            )
    return True
