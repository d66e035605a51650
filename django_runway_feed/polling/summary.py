"""What a poll round or run did, and the clock the poller reads: the base of the package."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Clock = Callable[[], dt.datetime]


@dataclass
class PollSummary:
    """What a round or a run did; returned by jobs and printed by commands."""

    rounds: int = 0
    claimed: int = 0
    polled: int = 0
    transitions: int = 0
    errors: int = 0
    paused: bool = False
    # Rounds the request budget (MAX_REQUESTS_PER_SECOND, or a 429 storm) held back.
    throttled: int = 0

    def add(self, other: PollSummary) -> None:
        self.rounds += other.rounds
        self.claimed += other.claimed
        self.polled += other.polled
        self.transitions += other.transitions
        self.errors += other.errors
        self.paused = self.paused or other.paused
        self.throttled += other.throttled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
