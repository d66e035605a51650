"""What recent finishes say about a task, as pure rules: are callbacks arriving, how long do
tasks of its profile run.

:mod:`django_runway_feed.history` reads the rows and applies these rules; the cadence
(:func:`django_runway_feed.planning.next_poll_delay`) asks an :class:`Outlook` for what it needs.
Nothing here reads the database.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Callbacks are believed while, among the latest CALLBACK_EVIDENCE settled finishes, at least
# CALLBACK_MIN_ANNOUNCED were announced by one, fewer than half were not, and the newest
# CALLBACK_MISS_STREAK were not all missed (a quiet site notices a stop after a few finishes).
CALLBACK_EVIDENCE = 20
CALLBACK_MIN_ANNOUNCED = 2
CALLBACK_MISS_STREAK = 4
# Run times are learned per profile from the latest RUN_TIME_WINDOW successes, once there are
# RUN_TIME_MIN_SAMPLES of them; "low" and "high" are these quantiles of the run time.
RUN_TIME_WINDOW = 100
RUN_TIME_MIN_SAMPLES = 20
RUN_TIME_LOW, RUN_TIME_HIGH = 0.02, 0.98


class Profiled(Protocol):
    """What says which profile a task has (a ``RunwayTask`` row has it)."""

    @property
    def route(self) -> str: ...
    @property
    def request(self) -> Any: ...


@dataclass(frozen=True)
class RunTimes:
    """How long recent successes of one profile ran, from start to finish, in seconds."""

    samples: int
    low: float
    median: float
    high: float


def learn_run_times(durations: Sequence[float]) -> RunTimes | None:
    """The quantiles the cadence uses, or None with fewer than ``RUN_TIME_MIN_SAMPLES``."""
    usable = [value for value in durations if value > 0]
    if len(usable) < RUN_TIME_MIN_SAMPLES:
        return None
    cuts = statistics.quantiles(usable, n=100, method="inclusive")
    return RunTimes(
        samples=len(usable),
        low=cuts[round(RUN_TIME_LOW * 100) - 1],
        median=statistics.median(usable),
        high=cuts[round(RUN_TIME_HIGH * 100) - 1],
    )


def profile(route: str, request: Any) -> str:
    """What makes run times comparable: the route, the model and the clip length.

    ``"generate/gen4_turbo/10"``; a part the request does not give is left empty.
    """
    model: Any = None
    seconds: Any = None
    if isinstance(request, Mapping):
        model = request.get("model")
        options = request.get("options")
        if isinstance(options, Mapping):
            seconds = options.get("seconds")
    return profile_key(route, model, seconds)


def profile_key(route: str, model: Any, seconds: Any) -> str:
    return f"{route}/{model or ''}/{seconds or ''}"


class CallbackState:
    """What :func:`callback_verdict` concludes (plain strings, shown as they are)."""

    OFF = "off"  # CALLBACK_BASE_URL unset, or TRUST_CALLBACKS off
    WAITING = "waiting"  # no recent finish says yet whether callbacks arrive
    ARRIVING = "arriving"  # polling is a safety net
    MISSING = "missing"  # finishes came without their callback: the usual cadence


@dataclass(frozen=True)
class CallbackVerdict:
    state: str = CallbackState.OFF
    announced: int = 0
    missed: int = 0
    last_callback_at: dt.datetime | None = None

    @property
    def live(self) -> bool:
        return self.state == CallbackState.ARRIVING


def callback_verdict(
    announced: Sequence[bool], *, enabled: bool, last_callback_at: dt.datetime | None = None
) -> CallbackVerdict:
    """Are callbacks arriving? ``announced`` says, newest first, for each settled finish of a
    task created with a callback URL, whether its callback came.

    A finish is settled once it is old enough for a late callback to have come (see
    :mod:`django_runway_feed.history`); only successes count against callbacks, since failures
    may not be called back (COMETAPI.md, "Callbacks").
    """
    if not enabled:
        return CallbackVerdict()
    latest = list(announced[:CALLBACK_EVIDENCE])
    came = sum(latest)
    missed = len(latest) - came
    streak = latest[:CALLBACK_MISS_STREAK]
    if came < CALLBACK_MIN_ANNOUNCED and not missed:
        state = CallbackState.WAITING
    elif (
        came >= CALLBACK_MIN_ANNOUNCED
        and 2 * missed < len(latest)
        and not (len(streak) == CALLBACK_MISS_STREAK and not any(streak))
    ):
        state = CallbackState.ARRIVING
    else:
        state = CallbackState.MISSING
    return CallbackVerdict(state, came, missed, last_callback_at)


class Outlook(Protocol):
    """What the poller knows beyond the task itself; asked only when a decision needs it."""

    def callbacks(self) -> CallbackVerdict: ...
    def run_times_for(self, task: Profiled) -> RunTimes | None: ...


@dataclass(frozen=True)
class FixedOutlook:
    """An :class:`Outlook` given in full (the default knows nothing)."""

    verdict: CallbackVerdict = CallbackVerdict()
    learned: Mapping[str, RunTimes] = field(default_factory=dict)

    def callbacks(self) -> CallbackVerdict:
        return self.verdict

    def run_times_for(self, task: Profiled) -> RunTimes | None:
        return self.learned.get(profile(task.route, task.request))


NO_OUTLOOK: Outlook = FixedOutlook()
