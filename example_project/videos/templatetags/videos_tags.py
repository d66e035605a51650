from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("videos/_notifications.html", takes_context=True)
def notification_menu(context: dict[str, Any]) -> dict[str, Any]:
    """The header's notifications: unread count and the latest few, for the signed-in user."""
    from ..views import unread_notifications

    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"show": False}
    unread = unread_notifications(user)
    return {"show": True, "items": list(unread[:5]), "count": unread.count(), "request": request}
