"""The 401/403 pause every worker shares, kept in the one ``PollerState`` row.

When CometAPI refuses the key, the poller records a pause with a fingerprint of the settings it
was refused for. A pause recorded for other settings is not in effect, so a fixed key resumes
polling at once. The poller, the admin and the health checks read the pause through these
functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from django.conf import settings

from .conf import conf
from .models import PollerState


def settings_fingerprint() -> str:
    """A keyed hash of ``BASE_URL`` and ``API_KEY``: which settings a pause was recorded for.

    HMAC-SHA256 keyed with ``SECRET_KEY``, truncated: it tells "the key changed" without the
    database ever holding the key or anything an attacker could test guesses against offline.
    """
    message = f"{conf.BASE_URL}\n{conf.API_KEY or ''}".encode()
    secret = str(getattr(settings, "SECRET_KEY", "")).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def pause_in_effect(state: PollerState, now: dt.datetime) -> bool:
    """Whether ``state``'s 401/403 pause holds at ``now`` for the current settings.

    A pause recorded for another ``BASE_URL``/``API_KEY`` (its fingerprint differs) is not in
    effect: the site has changed the settings the API refused.
    """
    return (
        state.paused_until is not None
        and state.paused_until > now
        and state.pause_fingerprint in ("", settings_fingerprint())
    )


def active_pause(now: dt.datetime) -> PollerState | None:
    """The 401/403 pause in effect for the current settings, or None (read only)."""
    state = PollerState.objects.filter(pk=1, paused_until__gt=now).first()
    return state if state is not None and pause_in_effect(state, now) else None
