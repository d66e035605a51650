"""Fault injection for the fake CometAPI: which request gets which :class:`Fault`.

:class:`FaultInjection` is the part of :class:`~django_runway_feed.testing.FakeCometAPI` that
keeps the faults a test injected and draws the random ones of ``fault_rate``. How a fault goes
on the wire is in :mod:`~django_runway_feed.testing.answers`.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Final

from .scripts import Fault

# What ``fault_rate`` draws from: the transient failures a client must retry through.
RANDOM_FAULTS: Final = (
    Fault.rate_limited("1"),
    Fault.server_error(500),
    Fault.server_error(502),
    Fault.server_error(503),
    Fault.html(),
    Fault.malformed_json(),
)


@dataclass
class InjectedFault:
    fault: Fault
    remaining: int
    route: str
    task_id: str | None

    def matches(self, route: str, task_id: str | None) -> bool:
        if self.task_id is not None:
            return route == "feed" and task_id == self.task_id
        return self.route in ("any", route)


class FaultInjection:
    """Injected faults, matched in order, and the seeded draw of ``fault_rate``."""

    # Set by FakeCometAPI.__init__: one lock guards all of the server's shared state.
    _lock: threading.Lock
    fault_rate: float
    seed: int

    def _forget_faults(self) -> None:
        """Drop the faults and restart the seeded draw (the caller holds the lock)."""
        self._faults: list[InjectedFault] = []
        self._rng = random.Random(self.seed)

    def inject(
        self, fault: Fault, *, times: int = 1, task_id: str | None = None, route: str = "feed"
    ) -> None:
        """Answer the next ``times`` matching requests with ``fault``.

        ``route`` is ``"feed"``, ``"create"`` or ``"any"``; ``task_id`` restricts the fault to
        feed requests for that task. Faults are matched in the order they were injected, before
        authentication, and take precedence over ``fault_rate``.
        """
        if route not in ("feed", "create", "any"):
            raise ValueError(f"route must be 'feed', 'create' or 'any'; got {route!r}.")
        if times < 1:
            raise ValueError(f"times must be at least 1; got {times!r}.")
        if task_id is not None and route == "create":
            raise ValueError("A task_id only restricts feed faults: a create has no task id yet.")
        with self._lock:
            self._faults.append(InjectedFault(fault, times, route, task_id))

    def clear_faults(self) -> None:
        """Drop every injected fault that has not fired yet (``fault_rate`` is unaffected)."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, route: str, task_id: str | None) -> Fault | None:
        """The fault this request gets, if any (used by the request handler)."""
        with self._lock:
            for injected in self._faults:
                if injected.matches(route, task_id):
                    injected.remaining -= 1
                    if injected.remaining == 0:
                        self._faults.remove(injected)
                    return injected.fault
            if route == "feed" and self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(RANDOM_FAULTS)
        return None
