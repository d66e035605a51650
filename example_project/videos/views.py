"""The example site's pages: create a video, watch your videos, read your notifications.

Each view parses its input, calls the app's public API once, and renders. The JSON views serve
the page's small polling script; they only ever show the signed-in user's own tasks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from django_runway_feed.exceptions import RunwayFeedError
from django_runway_feed.models import RunwayTask, RunwayTaskQuerySet

from .forms import NewVideoForm
from .models import Notification

LIST_LIMIT = 50


def user_tasks(user: Model) -> RunwayTaskQuerySet:
    """The tasks created for ``user``: the generic relation set by ``content_object=user``."""
    return RunwayTask.objects.for_object(user)


def video_url(task: RunwayTask) -> str:
    """What the player plays: the stored copy when downloads are on, else the provider's URL.

    Anything that is not http(s) (a ``javascript:`` URL from a hostile answer) is never used.
    """
    if task.output_file:
        return str(task.output_file.url)
    url = task.result_url
    if task.status == "succeeded" and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return ""


UNCONFIRMED = "We could not confirm that the video was accepted; it is not sent again."


def _problem(task: RunwayTask) -> str:
    if task.is_finished:
        return task.fail_reason or task.failure_code
    if task.status == "submitting" and task.last_error:
        # The create call's answer was lost: the task may exist (and be billed) at the
        # provider, so the app never re-sends it. Users get a plain sentence, operators the
        # details in the admin.
        return UNCONFIRMED
    return ""


def task_state(task: RunwayTask) -> dict[str, Any]:
    """The JSON the page's script reads; every value is data, never markup."""
    return {
        "id": task.pk,
        "status": task.status,
        "status_label": task.get_status_display(),
        "progress": 100 if task.status == "succeeded" else task.progress,
        # A failed task's last progress (often 97 %) would read as "nearly done": no bar.
        "show_progress": task.status not in ("failed", "cancelled"),
        "finished": task.is_finished,
        "video_url": video_url(task),
        "failure": _problem(task),
    }


def _json_login_required(request: HttpRequest) -> JsonResponse | None:
    if request.user.is_authenticated:
        return None
    return JsonResponse({"error": "Log in first."}, status=401)


def home(request: HttpRequest) -> HttpResponse:
    return redirect("videos:list" if request.user.is_authenticated else "login")


@login_required
def video_list(request: HttpRequest) -> HttpResponse:
    tasks = list(user_tasks(request.user).order_by("-created_at", "-pk")[:LIST_LIMIT])
    cards = [(task, task_state(task)) for task in tasks]
    return render(request, "videos/list.html", {"cards": cards})


@login_required
def new_video(request: HttpRequest) -> HttpResponse:
    form = NewVideoForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            task = RunwayTask.objects.generate(
                **form.generate_kwargs(), content_object=request.user
            )
        except ValidationError as exc:
            form.add_task_errors(exc)
        except RunwayFeedError as exc:
            # Raised before any row or request, e.g. no API key configured; nothing is lost.
            form.add_error(None, f"The video service is not available: {exc}")
        else:
            if task.status == "failed":
                messages.error(request, f"CometAPI refused the video: {task.fail_reason}")
            elif task.status == "submitting":
                messages.warning(request, UNCONFIRMED)
            else:
                messages.success(request, "Video requested. It appears below as it renders.")
            return redirect("videos:list")
    return render(request, "videos/new.html", {"form": form})


@require_GET
def task_status(request: HttpRequest, pk: int) -> JsonResponse:
    if refused := _json_login_required(request):
        return refused
    # Someone else's task and a task that does not exist look the same: 404.
    task = user_tasks(request.user).filter(pk=pk).first()
    if task is None:
        raise Http404("No such video.")
    return JsonResponse(task_state(task))


def unread_notifications(user: Model) -> Any:
    return Notification.objects.filter(user=user, read_at__isnull=True)


@require_GET
def notifications_json(request: HttpRequest) -> JsonResponse:
    if refused := _json_login_required(request):
        return refused
    unread = unread_notifications(request.user)
    items = [
        {"id": n.pk, "kind": n.kind, "message": n.message, "created_at": n.created_at.isoformat()}
        for n in unread[:5]
    ]
    return JsonResponse({"unread": unread.count(), "items": items})


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    unread_notifications(request.user).update(read_at=timezone.now())
    return redirect("videos:list")
