"""Runway tasks, their history, and the poller's shared state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import settings_checks, validation
from .conf import conf
from .exceptions import ConfigurationError
from .files import result_storage
from .statuses import TERMINAL_STATUSES, UNFINISHED_STATUSES, FailureCode, Status

if TYPE_CHECKING:
    from .client import CometAPIClient

# Tasks the poller asks the feed about: accepted by the provider and not finished.
POLLABLE_STATUSES = (Status.QUEUED, Status.RUNNING)


class TaskServices(Protocol):
    """What the manager and the model hand their work to: :mod:`django_runway_feed.services`.

    The services build on the models, so the models reach them through this registration
    (``AppConfig.ready`` calls :func:`register_services`): the one sanctioned exception to the
    layers, documented in docs/architecture.md. The services' own signatures are the reference.
    """

    submit_task: Callable[..., RunwayTask]
    track_task: Callable[..., RunwayTask]
    poll_task_now: Callable[..., Any]  # its PollSummary lives above the models


_services: list[TaskServices] = []


def register_services(services: TaskServices) -> None:
    """Give the manager and the model the services they call (``AppConfig.ready`` does it)."""
    _services[:] = [services]


def task_services() -> TaskServices:
    """The registered services; only missing when the app is not in ``INSTALLED_APPS``."""
    if not _services:
        raise ImproperlyConfigured(
            "django_runway_feed's services are not registered: add 'django_runway_feed' to "
            "INSTALLED_APPS (its AppConfig registers them when the apps are ready)."
        )
    return _services[0]


class Route(models.TextChoices):
    GENERATE = "generate", _("Generate (text/image to video)")
    VIDEO_TO_VIDEO = "video2video", _("Video to video")
    ACT_ONE = "act_one", _("Act-One")
    TRACKED = "tracked", _("Tracked (created elsewhere)")


class DownloadStatus(models.TextChoices):
    NONE = "", _("Not downloaded")
    PENDING = "pending", _("Pending")
    STORED = "stored", _("Stored")
    FAILED = "failed", _("Failed")


class RunwayTaskQuerySet(models.QuerySet["RunwayTask"]):
    def unfinished(self) -> RunwayTaskQuerySet:
        return self.filter(status__in=UNFINISHED_STATUSES)

    def finished(self) -> RunwayTaskQuerySet:
        return self.filter(status__in=TERMINAL_STATUSES)

    def pollable(self) -> RunwayTaskQuerySet:
        # Same condition as the partial index ``runway_task_due_idx``, so PostgreSQL uses it.
        return self.filter(status__in=POLLABLE_STATUSES)

    def unleased(self, now: dt.datetime) -> RunwayTaskQuerySet:
        return self.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now))

    def due(self, now: dt.datetime | None = None) -> RunwayTaskQuerySet:
        """Unfinished tasks whose next poll time has come and that no live lease protects."""
        now = now or timezone.now()
        return self.pollable().filter(next_poll_at__lte=now).unleased(now)

    def stuck(
        self, now: dt.datetime | None = None, *, after: float | dt.timedelta | None = None
    ) -> RunwayTaskQuerySet:
        """Unfinished tasks submitted (or, never accepted, created) more than ``after`` ago.

        ``after`` defaults to ``RUNWAY_FEED['STALE_AFTER']``. Measured from submission because
        a task can go without a successful poll no longer than it has existed.
        """
        now = now or timezone.now()
        if after is None:
            after = conf.STALE_AFTER
        if not isinstance(after, dt.timedelta):
            after = dt.timedelta(seconds=after)
        cutoff = now - after
        # Two plain conditions rather than Coalesce(): the (status, created_at) index stays usable.
        return self.unfinished().filter(
            Q(submitted_at__lte=cutoff) | Q(submitted_at__isnull=True, created_at__lte=cutoff)
        )

    def for_object(self, obj: models.Model) -> RunwayTaskQuerySet:
        """Tasks attached to one of the host site's objects through the generic relation."""
        return self.filter(
            content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
        )


_RunwayTaskManagerBase = models.Manager.from_queryset(RunwayTaskQuerySet)


def _require_a_poller() -> None:
    """Refuse a task no cluster could ever poll (checks E011 and E012), before any row or request.

    ``manage.py shell`` and scripts run no system checks, so the create methods ask themselves.
    """
    errors = settings_checks.wiring_errors()
    if errors:
        raise ConfigurationError(f"No task was created: {errors[0].msg} {errors[0].hint}")


class RunwayTaskManager(_RunwayTaskManagerBase["RunwayTask"]):
    """``RunwayTask.objects``: the queryset vocabulary plus the ways to create tasks."""

    def generate(
        self,
        prompt: str | None = None,
        *,
        image: str | None = None,
        model: str = "gen4",
        ratio: str = "1280:720",
        style: str | None = None,
        seconds: int = 5,
        motion_vector: dict[str, float] | None = None,
        end_image: str | None = None,
        content_object: models.Model | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        client: CometAPIClient | None = None,
        **unknown: Any,
    ) -> RunwayTask:
        """Create a text-to-video task, or image-to-video when ``image`` (a URL) is given.

        Arguments are validated first (``ValidationError``, one message list per argument; no
        row, no request). The row is saved as ``submitting`` before the POST; see
        :func:`django_runway_feed.services.submit_task` for what each outcome leaves.
        """
        body = validation.generate_body(
            prompt=prompt,
            image=image,
            model=model,
            ratio=ratio,
            style=style,
            seconds=seconds,
            motion_vector=motion_vector,
            end_image=end_image,
            extra=unknown,
        )
        return self._submit(
            Route.GENERATE,
            body,
            content_object,
            metadata,
            idempotency_key,
            client,
        )

    def video_to_video(
        self,
        video: str,
        *,
        prompt: str,
        model: str = "gen4",
        structure_transformation: float = 0.5,
        flip: bool = False,
        seconds: int = 5,
        content_object: models.Model | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        client: CometAPIClient | None = None,
        **unknown: Any,
    ) -> RunwayTask:
        """Restyle ``video`` (a URL) following ``prompt``. Validated like :meth:`generate`."""
        body = validation.video_to_video_body(
            video=video,
            prompt=prompt,
            model=model,
            structure_transformation=structure_transformation,
            flip=flip,
            seconds=seconds,
            extra=unknown,
        )
        return self._submit(
            Route.VIDEO_TO_VIDEO,
            body,
            content_object,
            metadata,
            idempotency_key,
            client,
        )

    def act_one(
        self,
        video: str,
        image: str,
        *,
        content_object: models.Model | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        client: CometAPIClient | None = None,
        **unknown: Any,
    ) -> RunwayTask:
        """Move the performance in ``video`` onto the character in ``image`` (16:9 sources)."""
        body = validation.act_one_body(video=video, image=image, extra=unknown)
        return self._submit(
            Route.ACT_ONE,
            body,
            content_object,
            metadata,
            idempotency_key,
            client,
        )

    def _submit(
        self,
        route: Route,
        body: dict[str, Any],
        content_object: models.Model | None,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        client: CometAPIClient | None,
    ) -> RunwayTask:
        """Hand a validated ``body`` to :func:`~django_runway_feed.services.submit_task`."""
        _require_a_poller()
        return task_services().submit_task(
            route,
            body,
            content_object=content_object,
            metadata=validation.metadata(metadata),
            idempotency_key=validation.idempotency_key(idempotency_key),
            client=client,
        )

    def track(
        self,
        task_id: str,
        *,
        content_object: models.Model | None = None,
        metadata: dict[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> RunwayTask:
        """Follow a task created elsewhere. Tracking a known id returns the existing row."""
        _require_a_poller()
        return task_services().track_task(
            task_id, content_object=content_object, metadata=metadata, now=now
        )


class RunwayTask(models.Model):
    """One Runway task: the provider's view of it, our polling bookkeeping, and the host's link."""

    task_id = models.CharField(_("task id"), max_length=128, unique=True, null=True, blank=True)
    route = models.CharField(_("route"), max_length=16, choices=Route.choices)
    action = models.CharField(_("action"), max_length=64, blank=True)

    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.SUBMITTING
    )
    provider_status = models.CharField(_("provider status"), max_length=64, blank=True)
    provider_inner_status = models.CharField(_("Runway status"), max_length=64, blank=True)
    progress = models.PositiveSmallIntegerField(_("progress"), default=0)
    result_url = models.URLField(_("result URL"), max_length=2048, blank=True)
    outputs = models.JSONField(_("outputs"), default=list, blank=True)
    failure_code = models.CharField(_("failure code"), max_length=128, blank=True)
    fail_reason = models.TextField(_("failure reason"), blank=True)

    request = models.JSONField(_("request"), default=dict, blank=True)
    prompt = models.TextField(_("prompt"), blank=True)
    idempotency_key = models.CharField(
        _("idempotency key"), max_length=255, unique=True, null=True, blank=True
    )
    last_response = models.JSONField(_("last response"), null=True, blank=True)

    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    submitted_at = models.DateTimeField(_("submitted"), null=True, blank=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # Set when an operator resumes a given-up task: TASK_TIMEOUT and NOT_FOUND_GRACE count
    # from here rather than from submission, so the task gets a fresh window.
    resumed_at = models.DateTimeField(_("resumed"), null=True, blank=True)
    last_polled_at = models.DateTimeField(_("last polled"), null=True, blank=True)
    # Created with a callback URL that reaches this site (CALLBACK_BASE_URL was set), and when
    # its first callback came: the evidence that callbacks arrive (django_runway_feed.history).
    expects_callback = models.BooleanField(_("expects a callback"), default=False)
    callback_at = models.DateTimeField(_("callback received"), null=True, blank=True)
    # Set while a poll job queued by a callback waits for a worker: at most one per task.
    callback_job_queued_at = models.DateTimeField(
        _("callback poll queued"), null=True, blank=True, editable=False
    )
    next_poll_at = models.DateTimeField(_("next poll"), null=True, blank=True)

    poll_count = models.PositiveIntegerField(_("polls"), default=0)
    error_count = models.PositiveIntegerField(_("consecutive errors"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    stale_at = models.DateTimeField(_("marked stale"), null=True, blank=True)
    lease_owner = models.CharField(_("lease owner"), max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(_("lease expires"), null=True, blank=True)

    content_type = models.ForeignKey(
        ContentType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    object_id = models.CharField(_("object id"), max_length=255, blank=True)
    content_object = GenericForeignKey("content_type", "object_id")
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)

    resubmitted_from = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="resubmissions",
        verbose_name=_("resubmitted from"),
    )

    # Result persistence (DOWNLOAD_RESULTS): the video in output_file, the poster in poster_file,
    # every stored file (kind, name, size, sha256, content type) in stored_files.
    output_file = models.FileField(
        _("stored output"),
        upload_to="runway_feed/%Y/%m/",
        storage=result_storage,
        max_length=500,
        blank=True,
    )
    poster_file = models.FileField(
        _("stored poster"),
        upload_to="runway_feed/%Y/%m/",
        storage=result_storage,
        max_length=500,
        blank=True,
    )
    stored_files = models.JSONField(_("stored files"), default=list, blank=True)
    output_size = models.BigIntegerField(_("stored size"), null=True, blank=True)
    output_sha256 = models.CharField(_("stored sha256"), max_length=64, blank=True)
    output_content_type = models.CharField(_("stored content type"), max_length=100, blank=True)
    download_status = models.CharField(
        _("download"), max_length=16, choices=DownloadStatus.choices, blank=True, default=""
    )
    download_attempts = models.PositiveSmallIntegerField(_("download attempts"), default=0)
    download_error = models.TextField(_("download error"), blank=True)
    download_retry_at = models.DateTimeField(_("download retry at"), null=True, blank=True)
    downloaded_at = models.DateTimeField(_("downloaded"), null=True, blank=True)

    objects: ClassVar[RunwayTaskManager] = RunwayTaskManager()

    class Meta:
        verbose_name = _("Runway task")
        verbose_name_plural = _("Runway tasks")
        ordering = ("-created_at",)
        indexes = [
            # The poller's due query: pollable rows ordered by next_poll_at.
            models.Index(
                fields=["next_poll_at"],
                condition=Q(status__in=POLLABLE_STATUSES),
                name="runway_task_due_idx",
            ),
            models.Index(fields=["status", "created_at"], name="runway_task_status_idx"),
            # The admin's newest-first list and its year/month drill-down, read backwards.
            models.Index(fields=["created_at", "id"], name="runway_task_created_idx"),
            # The newest finishes, read by the poller's history (django_runway_feed.history).
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="runway_task_finished_idx",
            ),
            # The status report's "polled in the last hour" reads a range of this.
            models.Index(fields=["last_polled_at"], name="runway_task_polled_idx"),
            models.Index(fields=["content_type", "object_id"], name="runway_task_object_idx"),
            # Downloads waiting for a (re)try.
            models.Index(
                fields=["download_retry_at"],
                condition=Q(download_status="pending"),
                name="runway_task_download_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id or f'#{self.pk}'} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_given_up(self) -> bool:
        return self.status == Status.FAILED and self.failure_code in (
            FailureCode.TIMEOUT,
            FailureCode.NOT_FOUND,
        )

    def refresh_from_feed(
        self, *, client: CometAPIClient | None = None, now: dt.datetime | None = None
    ) -> RunwayTask:
        """Poll this task now, synchronously, apply the answer, and reload the row."""
        task_services().poll_task_now(self, client=client, now=now)
        self.refresh_from_db()
        return self


class EventKind(models.TextChoices):
    TRANSITION = "transition", _("Status change")
    TRACKED = "tracked", _("Tracking started")
    MANUAL_POLL = "manual_poll", _("Manual poll")
    SUBMIT_ERROR = "submit_error", _("Submission outcome unknown")
    RESUMED = "resumed", _("Tracking resumed")
    RESUBMITTED = "resubmitted", _("Resubmitted as a new task")
    DOWNLOAD_QUEUED = "download_queued", _("Download queued")
    DOWNLOAD_RETRY = "download_retry", _("Download attempt failed")
    DOWNLOAD_FAILED = "download_failed", _("Download failed")
    RESULT_STORED = "result_stored", _("Result stored")


class TaskEvent(models.Model):
    """Append-only history of a task, and the outbox its signals are delivered from."""

    task = models.ForeignKey(RunwayTask, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(_("kind"), max_length=32, choices=EventKind.choices)
    from_status = models.CharField(_("from"), max_length=16, blank=True)
    to_status = models.CharField(_("to"), max_length=16, blank=True)
    progress = models.PositiveSmallIntegerField(_("progress"), null=True, blank=True)
    message = models.TextField(_("message"), blank=True)
    payload = models.JSONField(_("payload"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    # Outbox bookkeeping: signals for this event are due until dispatched_at is set; the sweep
    # only takes events whose redeliver_after has passed, so it never races the live send.
    dispatched_at = models.DateTimeField(_("dispatched"), null=True, blank=True)
    redeliver_after = models.DateTimeField(_("redeliver after"), null=True, blank=True)

    class Meta:
        verbose_name = _("task event")
        verbose_name_plural = _("task events")
        ordering = ("created_at", "pk")
        indexes = [
            models.Index(
                fields=["redeliver_after"],
                condition=Q(dispatched_at__isnull=True),
                name="runway_event_outbox_idx",
            ),
            # Transitions of the last hour (the status report), counted from this index alone.
            models.Index(
                fields=["created_at"],
                condition=Q(kind="transition"),
                name="runway_event_transition_idx",
            ),
        ]

    def __str__(self) -> str:
        if self.kind == EventKind.TRANSITION:
            return f"{self.from_status or '-'} -> {self.to_status}"
        return str(self.get_kind_display())


class PollerState(models.Model):
    """One row shared by every worker: the last run (heartbeat) and the API pause."""

    last_run_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_run = models.JSONField(default=dict, blank=True)
    paused_until = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    # Which settings the pause was for: a keyed hash of BASE_URL and API_KEY (never the key),
    # so a changed key lifts the pause at once.
    pause_fingerprint = models.CharField(max_length=64, blank=True)
    # The shared request budget (MAX_REQUESTS_PER_SECOND): the earliest time, in epoch
    # seconds, at which the next request may start (a GCRA "theoretical arrival time").
    budget_tat = models.FloatField(default=0.0)
    # Gateway health (django_runway_feed.gateway): the answers and failed answers (5xx,
    # timeouts, unreadable bodies) every worker saw in the minute starting at
    # ``gateway_window_start`` (epoch seconds), and the end of the last hold they caused.
    gateway_window_start = models.FloatField(default=0.0)
    gateway_answers = models.PositiveIntegerField(default=0)
    gateway_errors = models.PositiveIntegerField(default=0)
    gateway_held_until = models.DateTimeField(null=True, blank=True)
    # The callback verdict every worker last agreed on (outlook.CallbackState): the worker that
    # moves it away from "arriving" brings the relaxed tasks forward, once for all.
    callbacks_state = models.CharField(max_length=16, blank=True)

    class Meta:
        verbose_name = _("poller state")
        verbose_name_plural = _("poller state")

    def __str__(self) -> str:
        return str(_("Runway feed poller"))

    @classmethod
    def load(cls) -> PollerState:
        state, _created = cls.objects.get_or_create(pk=1)
        return state
