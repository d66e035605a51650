"""The fake CometAPI's tasks and the scripts they follow.

:class:`TaskScripting` is the part of :class:`~django_runway_feed.testing.FakeCometAPI` that
creates tasks (from a create request, or directly with :meth:`~TaskScripting.add_task`), picks
each one's :class:`TaskScript`, and says what the feed answers for it at the server's time.
"""

from __future__ import annotations

import collections
import math
import threading
import time
import uuid
from typing import Any

from .clock import FakeClock
from .scripts import TaskScript
from .tasks import TASK_NOT_EXIST_BODY, FakeTask, feed_payload, signed_query


class TaskScripting:
    """The tasks the server knows, the scripts queued or registered for new ones, and the
    feed's answers."""

    # Set by FakeCometAPI.__init__: one lock guards all of the server's shared state.
    _lock: threading.Lock
    clock: FakeClock | None
    default_script: TaskScript
    task_not_exist_status: int
    output_url_ttl: float | None
    _url_secret: bytes

    def _base_url(self) -> str:
        """Where the server listens (FakeCometAPI knows)."""
        raise NotImplementedError

    def _forget_tasks(self) -> None:
        """Forget every task and script (the caller holds the lock)."""
        self._tasks: dict[str, FakeTask] = {}
        self._next_scripts: collections.deque[TaskScript] = collections.deque()
        self._prompt_scripts: list[tuple[str, TaskScript]] = []

    def now(self) -> float:
        """The server's time: the clock's, or the real time when there is no clock."""
        return self.clock.now() if self.clock is not None else time.time()

    def script_next(self, *scripts: TaskScript) -> None:
        """Give the next created tasks these scripts, in order; later ones get the default."""
        with self._lock:
            self._next_scripts.extend(scripts)

    def script_prompt(self, substring: str, script: TaskScript) -> None:
        """Give tasks whose create ``prompt`` contains ``substring`` this script.

        Checked after the :meth:`script_next` queue and before the default; the first matching
        registration wins.
        """
        with self._lock:
            self._prompt_scripts.append((substring, script))

    def add_task(
        self,
        script: TaskScript | None = None,
        *,
        task_id: str | None = None,
        action: str | None = None,
        created_at: float | None = None,
        prompt: str = "",
        callback_url: str = "",
    ) -> str:
        """Create a task directly, as if created elsewhere, and return its id (a uuid4).

        ``script`` defaults to ``default_script``; ``action`` to the script's; ``created_at``
        (server clock) to now, so a task can be back-dated.
        """
        chosen = script if script is not None else self.default_script
        task = FakeTask(
            task_id=task_id if task_id is not None else str(uuid.uuid4()),
            script=chosen,
            created_at=created_at if created_at is not None else self.now(),
            action=action if action is not None else chosen.action,
            prompt=prompt,
            callback_url=callback_url,
        )
        with self._lock:
            if task.task_id in self._tasks:
                raise ValueError(f"A fake task {task.task_id!r} already exists.")
            self._tasks[task.task_id] = task
        return task.task_id

    def task_ids(self) -> list[str]:
        """Ids of every task the server knows, in creation order."""
        with self._lock:
            return list(self._tasks)

    def task_phase(self, task_id: str) -> str:
        """Where the task is in its script now (KeyError for an unknown id).

        One of ``invisible``, ``queued``, ``throttled``, ``running``, ``succeeded``, ``failed``,
        ``cancelled``.
        """
        return self._task(task_id).phase_at(self.now())

    def task_state(self, task_id: str) -> dict[str, Any]:
        """The feed body the task would produce now, faults aside (for debugging).

        Raises KeyError for an unknown id; an invisible task gives the ``task_not_exist`` body.
        """
        task, now = self._task(task_id), self.now()
        return feed_payload(
            task, now, base_url=self._base_url(), url_query=self._url_query(task.task_id, now)
        )

    def _url_query(self, task_id: str, now: float) -> str:
        if self.output_url_ttl is None:
            return ""
        return signed_query(self._url_secret, task_id, math.ceil(now + self.output_url_ttl))

    def _task(self, task_id: str) -> FakeTask:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise KeyError(f"The fake server has no task {task_id!r}.")
        return task

    # Used by the request handler --------------------------------------------------------------

    def _create_task(self, route: str, body: dict[str, Any]) -> str:
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        callback_url = body.get("callback_url")
        with self._lock:
            if self._next_scripts:
                script = self._next_scripts.popleft()
            else:
                script = next(
                    (s for substring, s in self._prompt_scripts if substring in str(prompt)),
                    self.default_script,
                )
            task = FakeTask(
                task_id=str(uuid.uuid4()),
                script=script,
                created_at=self.now(),
                action=script.action,
                route=route,
                prompt=str(prompt),
                callback_url=str(callback_url),
            )
            self._tasks[task.task_id] = task
        return task.task_id

    def _feed_answer(self, task_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            return self.task_not_exist_status, dict(TASK_NOT_EXIST_BODY)
        now = self.now()
        payload = feed_payload(
            task, now, base_url=self._base_url(), url_query=self._url_query(task_id, now)
        )
        if payload.get("code") == "task_not_exist":
            return self.task_not_exist_status, payload
        return 200, payload

    def _has_task(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._tasks
