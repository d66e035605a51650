"""Asking the feed about claimed tasks, concurrently, each request inside its task's lease.

Requests run on the poller's thread pool and one pooled session, outside any transaction. A
request is sent only while there is time for it to end before its task's lease does (and before
the run's window closes); a task not sent gets :class:`NotSent` and is released untouched.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future

from ..client import CometAPIClient, request_seconds
from ..conf import conf
from ..exceptions import InvalidResponseError, RunwayFeedError, TransientAPIError
from ..feed import FeedSnapshot, parse_feed
from ..models import RunwayTask

logger = logging.getLogger(__name__)

# A request ends this long before its task's lease, for the time between reading the clock
# and writing the lease (and clocks that disagree a little).
LEASE_MARGIN_SECONDS = 0.5
# The answer is read this long before the lease ends, so that decoding and cleaning it (linear
# in its size, bounded by MAX_RESPONSE_BYTES: milliseconds, see benchmarks/bench_cleaning.py)
# also happen under the lease. An answer only ready after the lease ended is dropped unapplied.
HANDLING_MARGIN_SECONDS = 2.0

Answer = FeedSnapshot | Exception


class NotSent(Exception):
    """A request that was not sent: its lease or its run's window ran out first."""


def send_deadline(lease_ends: float, *, stop_sending_at: float | None) -> float:
    """The monotonic time after which no request of a batch whose leases end then starts."""
    # A request takes at most request_seconds(), so one sent before this ends while the
    # lease still protects its row (E004: the lease is longer than a request; if it is not,
    # half the lease). Nothing is sent once the run's window is over, so a run lasts its
    # window plus one request.
    lease = conf.LEASE_SECONDS
    deadline = lease_ends - min(request_seconds(), lease / 2)
    if stop_sending_at is not None:
        deadline = min(deadline, stop_sending_at)
    return deadline


def fetch_one(client: CometAPIClient, task_id: str, deadline: float, lease_ends: float) -> Answer:
    """One task's feed answer, or the error it came to (never raised: one task's trouble)."""
    if time.monotonic() > deadline:
        return NotSent()
    try:
        # However the server trickles, the request ends before the lease does: another
        # worker may claim the task then, and two polls of one task must never overlap.
        answer = client.feed(task_id, until=lease_ends - HANDLING_MARGIN_SECONDS)
        snapshot = parse_feed(answer)
        if time.monotonic() > lease_ends:
            # Another worker may hold the task by now: its answer is the one that counts.
            raise TransientAPIError(
                f"The answer about task {task_id} was ready only after its lease ended"
            )
        if snapshot.task_id != task_id:
            raise InvalidResponseError(
                f"The feed answered about task {snapshot.task_id!r} instead of {task_id!r}"
            )
        return snapshot
    except RunwayFeedError as exc:
        return exc
    except Exception as exc:  # a bug must cost one task one poll, never the whole run
        logger.exception("Unexpected error while polling task %s", task_id)
        return exc


def queue_fetches(
    executor: Executor,
    client: CometAPIClient,
    tasks: list[RunwayTask],
    *,
    send: int,
    claimed_at: float,
    stop_sending_at: float | None,
) -> list[Future[Answer]]:
    """Queue the requests of the first ``send`` tasks on ``executor``; the rest get NotSent.

    ``claimed_at`` is the ``time.monotonic()`` just before the claim: the leases end
    ``LEASE_SECONDS`` after it (less a margin for the clock the claim used).
    """
    lease_ends = claimed_at + conf.LEASE_SECONDS - LEASE_MARGIN_SECONDS
    deadline = send_deadline(lease_ends, stop_sending_at=stop_sending_at)
    futures = [
        executor.submit(fetch_one, client, str(task.task_id), deadline, lease_ends)
        for task in tasks[:send]
    ]
    for _task in tasks[send:]:
        unsent: Future[Answer] = Future()
        unsent.set_result(NotSent())
        futures.append(unsent)
    return futures
