"""Run a few long-lived commands together and stop all of them together (``make serve``).

Each child starts in its own session (its own process group), so a terminal's Ctrl-C reaches
only this process, which then stops the children in order: SIGTERM to each whole group (a
qcluster's workers and runserver's reloader child included), SIGKILL to whatever is still
there after a grace period. On Linux each child also gets SIGTERM if this process dies without
cleaning up (even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import IO, Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def group_alive(pgid: int) -> bool:
    """True while any process of the group is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform != "linux":
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ")".
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class Child:
    name: str
    process: subprocess.Popen[Any]


class Supervisor:
    """Start children with :meth:`start`, block in :meth:`wait`, clean up with :meth:`stop`.

    Used as a context manager, :meth:`stop` runs however the block is left.
    """

    def __init__(
        self, *, log: Callable[[str], None] = print, grace: float = 10.0, tick: float = 0.2
    ) -> None:
        self.children: list[Child] = []
        self.log = log
        self.grace = grace
        self.tick = tick
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> Supervisor:
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in a new session; its output goes to ours unless ``stdout`` is given."""
        process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.children.append(Child(name, process))
        return process

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def wait(self, until: Callable[[], bool] | None = None) -> str:
        """Block until a stop signal arrives, a child exits, or ``until()`` is true.

        Returns ``"signal"``, ``"exited"`` or ``"ready"``.
        """
        while True:
            if self.stop_signal is not None:
                return "signal"
            if self.exited() is not None:
                return "exited"
            if until is not None and until():
                return "ready"
            time.sleep(self.tick)

    def stop(self) -> None:
        """SIGTERM every child's group (last started first), then SIGKILL what outlives grace."""
        for child in reversed(self.children):
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and any(
            group_alive(c.process.pid) for c in self.children
        ):
            for child in self.children:
                child.process.poll()  # reap, so a finished child stops counting
            time.sleep(self.tick)
        for child in self.children:
            if group_alive(child.process.pid):
                # A qcluster worker finishes its current job (a poll run lasts up to
                # POLL_WINDOW) before it exits; killing it is safe, its leases just expire.
                self.log(f"{child.name} still busy after {self.grace:g} s; killing it.")
                self._signal_group(child, signal.SIGKILL)
        for child in self.children:
            child.process.wait()

    @staticmethod
    def _signal_group(child: Child, signum: int) -> None:
        # start_new_session made the child a group leader: its pid is the group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signum)
