"""What the parts of the task admin share: their base class, and the admin URLs they link to
(a task's page, its host object's page, the live view).

``RunwayTaskAdmin`` (:mod:`.tasks`) is composed of one mixin per part: the list
(:mod:`.task_list`), the summary and live view (:mod:`.task_summary`), the task page
(:mod:`.task_page`) and the operator actions (:mod:`.task_actions`). Each mixin derives from
``TaskAdminBase``, so each is a typed ``ModelAdmin`` of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.contrib.admin.utils import quote
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..models import RunwayTask

if TYPE_CHECKING:
    # django-stubs makes ModelAdmin generic; at run time it is a plain class.
    TaskAdminBase = admin.ModelAdmin[RunwayTask]
else:
    TaskAdminBase = admin.ModelAdmin


def task_link(admin_site: AdminSite, task: RunwayTask) -> SafeString:
    url = reverse(f"{admin_site.name}:django_runway_feed_runwaytask_change", args=[task.pk])
    return format_html('<a href="{}">{}</a>', url, str(task))


def host_admin_url(admin_site: AdminSite, task: RunwayTask) -> str | None:
    """The admin page of the task's host object, when its model is registered on this site."""
    model = task.content_type.model_class() if task.content_type else None
    if model is None or not admin_site.is_registered(model):
        return None
    try:
        return reverse(
            f"{admin_site.name}:{model._meta.app_label}_{model._meta.model_name}_change",
            args=[quote(task.object_id)],
        )
    except NoReverseMatch:
        return None


def live_url(admin_site: AdminSite) -> str:
    return reverse(f"{admin_site.name}:django_runway_feed_runwaytask_live")
