"""What recently finished tasks tell the poller: are callbacks arriving, how long tasks run.

Both are read from the task rows themselves, newest finishes first along the ``finished_at``
index, and turned into an :class:`~django_runway_feed.outlook.Outlook` by the pure rules of
:mod:`django_runway_feed.outlook`. A :class:`Hindsight` (one per poll run) keeps the outlook
and reads it again every ``POLL_INTERVAL`` (callbacks) and ``RUN_TIME_REFRESH`` seconds, so a
round costs no query for it most of the time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.db.models import Q

from .conf import conf
from .models import PollerState, RunwayTask
from .outlook import (
    CALLBACK_EVIDENCE,
    RUN_TIME_WINDOW,
    CallbackState,
    CallbackVerdict,
    Outlook,
    Profiled,
    RunTimes,
    callback_verdict,
    learn_run_times,
    profile,
    profile_key,
)
from .statuses import Status

logger = logging.getLogger(__name__)

# A finish counts for or against callbacks once it is this old, so a late callback still counts.
CALLBACK_GRACE_SECONDS = 30.0
# Only finishes this recent say anything about callbacks today.
CALLBACK_EVIDENCE_MAX_AGE = 3600.0
# Run times are read from at most this many recent successes, all profiles together.
RUN_TIME_ROWS = 2000
RUN_TIME_REFRESH = 60.0


def callbacks_enabled() -> bool:
    return bool(conf.CALLBACK_BASE_URL) and conf.TRUST_CALLBACKS


def read_callback_verdict(now: dt.datetime) -> CallbackVerdict:
    """Are callbacks arriving for recent finishes? One query (none when they are off)."""
    if not callbacks_enabled():
        return CallbackVerdict()
    settled = (
        RunwayTask.objects.filter(
            expects_callback=True,
            finished_at__gte=now - dt.timedelta(seconds=CALLBACK_EVIDENCE_MAX_AGE),
            finished_at__lte=now - dt.timedelta(seconds=CALLBACK_GRACE_SECONDS),
        )
        # Failures may not be called back (COMETAPI.md): they count only when one came.
        .filter(Q(status=Status.SUCCEEDED) | Q(callback_at__isnull=False))
        .order_by("-finished_at")
        .values_list("callback_at", flat=True)[:CALLBACK_EVIDENCE]
    )
    came = list(settled)
    last = max((at for at in came if at is not None), default=None)
    return callback_verdict([at is not None for at in came], enabled=True, last_callback_at=last)


def read_run_times(now: dt.datetime) -> dict[str, RunTimes]:
    """Run-time quantiles per profile, from the latest successes. One query."""
    if not conf.LEARN_RUN_TIMES:
        return {}
    rows = (
        RunwayTask.objects.filter(
            status=Status.SUCCEEDED,
            finished_at__isnull=False,
            finished_at__lte=now,
            started_at__isnull=False,
        )
        .order_by("-finished_at")
        .values_list(
            "route", "request__model", "request__options__seconds", "started_at", "finished_at"
        )[:RUN_TIME_ROWS]
    )
    durations: dict[str, list[float]] = defaultdict(list)
    for route, model, seconds, started_at, finished_at in rows:
        window = durations[profile_key(route, model, seconds)]
        if started_at is not None and finished_at is not None and len(window) < RUN_TIME_WINDOW:
            window.append((finished_at - started_at).total_seconds())
    learned = {key: learn_run_times(values) for key, values in durations.items()}
    return {key: value for key, value in learned.items() if value is not None}


class Hindsight:
    """The outlook of one poll run, read again now and then (by the run's clock).

    :meth:`at` gives the :class:`~django_runway_feed.outlook.Outlook` of a moment; it reads
    the rows only when a decision asks, so a round whose tasks all finished costs no query.
    """

    def __init__(self) -> None:
        self._callbacks = CallbackVerdict()
        self._callbacks_read_at: dt.datetime | None = None
        # The state all workers last agreed on (PollerState.callbacks_state), when known: set
        # from the poller's read of the shared row each round.
        self.agreed_state: str | None = None
        self._run_times: dict[str, RunTimes] = {}
        self._run_times_read_at: dt.datetime | None = None

    @property
    def verdict(self) -> CallbackVerdict:
        """The callback verdict as last read (without reading it again)."""
        return self._callbacks

    def at(self, now: dt.datetime) -> Outlook:
        return _OutlookAt(self, now)

    def callbacks(self, now: dt.datetime) -> CallbackVerdict:
        if _stale(self._callbacks_read_at, now, conf.POLL_INTERVAL):
            self._callbacks = read_callback_verdict(now)
            self._callbacks_read_at = now
            self._agree(self._callbacks, now)
        return self._callbacks

    def _agree(self, verdict: CallbackVerdict, now: dt.datetime) -> None:
        """Record a changed verdict in the shared row; the worker that moves it acts on it.

        Across runs and workers, so callbacks that stop between two poll runs still bring the
        relaxed tasks forward, exactly once.
        """
        agreed = self.agreed_state
        if agreed is None:
            # No round read the shared row yet (a Hindsight used on its own): read it here.
            row, _created = PollerState.objects.get_or_create(pk=1)
            agreed = row.callbacks_state
        if agreed == verdict.state:
            self.agreed_state = agreed
            return
        moved = PollerState.objects.filter(pk=1, callbacks_state=agreed).update(
            callbacks_state=verdict.state
        )
        self.agreed_state = verdict.state
        if not moved:
            return  # another worker moved it first (and acted)
        if agreed == CallbackState.ARRIVING:
            self._fall_back(now)
        elif verdict.live:
            logger.info(
                "Callbacks arrive for recent finishes: tasks that expect one are polled only "
                "as a safety net"
            )

    def run_times(self, now: dt.datetime) -> dict[str, RunTimes]:
        if _stale(self._run_times_read_at, now, RUN_TIME_REFRESH):
            self._run_times = read_run_times(now)
            self._run_times_read_at = now
        return self._run_times

    def noticed_finish(
        self, task: Profiled, started_at: dt.datetime | None, finished_at: dt.datetime | None
    ) -> None:
        """A task finished: if sooner than its profile's history allowed, read it again."""
        if started_at is None or finished_at is None:
            return
        learned = self._run_times.get(profile(task.route, task.request))
        if learned is not None and (finished_at - started_at).total_seconds() < learned.low:
            # The history misleads (run times got shorter): the next decision reads it again.
            self._run_times_read_at = None

    def _fall_back(self, now: dt.datetime) -> None:
        """Callbacks stopped: every task relaxed for them is due within POLL_INTERVAL."""
        soon = now + dt.timedelta(seconds=conf.POLL_INTERVAL)
        moved = (
            RunwayTask.objects.pollable()
            .filter(expects_callback=True, next_poll_at__gt=soon)
            .update(next_poll_at=soon)
        )
        logger.warning(
            "Callbacks stopped arriving (%s of the latest finishes came without one): "
            "polling at the usual cadence again; %s tasks brought forward",
            self._callbacks.missed,
            moved,
        )


class _OutlookAt:
    def __init__(self, hindsight: Hindsight, now: dt.datetime) -> None:
        self._hindsight, self._now = hindsight, now

    def callbacks(self) -> CallbackVerdict:
        return self._hindsight.callbacks(self._now)

    def run_times_for(self, task: Profiled) -> RunTimes | None:
        return self._hindsight.run_times(self._now).get(profile(task.route, task.request))


def _stale(read_at: dt.datetime | None, now: dt.datetime, max_age: float) -> bool:
    return read_at is None or not 0 <= (now - read_at).total_seconds() < max_age
