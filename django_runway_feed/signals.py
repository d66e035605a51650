"""Signals sent to the host site. Every one has ``sender=RunwayTask``.

Transition signals (``task_submitted``, ``task_status_changed``, ``task_succeeded``,
``task_failed``) are delivered through the TaskEvent outbox: sent after the transaction that made
the change commits, once in the normal case and at least once if a worker dies between the commit
and the send. Receivers that must not act twice can deduplicate on ``event.pk``. A receiver that
raises is logged with its traceback; the other receivers still run.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: task (RunwayTask, task_id set), event (the TaskEvent of the submitting -> queued
# transition). The provider accepted a task this app created.
task_submitted = Signal()

# kwargs: task, previous (str, the old canonical status), status (str, the new one),
# event (TaskEvent). Every canonical transition, in order.
task_status_changed = Signal()

# kwargs: task, progress (int, 0-100). Progress changed. Best effort: not part of the outbox.
task_progressed = Signal()

# kwargs: task, event. The task reached ``succeeded``.
task_succeeded = Signal()

# kwargs: task, event. The task reached ``failed`` or ``cancelled`` (see task.failure_code).
task_failed = Signal()

# kwargs: task, event (its result_stored TaskEvent). The outputs were saved to the site's storage
# (RUNWAY_FEED["STORAGE"]); delivered through the outbox, at least once.
task_result_stored = Signal()

# kwargs: task. An unfinished task became stuck; sent once per task.
task_stale = Signal()
