"""Argument checks for the create routes, run before any row is saved or request is sent.

Each builder returns the JSON body of its route (without ``callback_url``, added at submission)
or raises Django's ``ValidationError`` with one message list per offending argument, so forms,
the admin and the command line can show each error next to its field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .feed import clean_url

MAX_PROMPT_CHARS = 1000
SECONDS_CHOICES = (5, 10)
RATIO_RE = re.compile(r"[1-9]\d{0,4}:[1-9]\d{0,4}", re.ASCII)
MODEL_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII | re.IGNORECASE)
# Runway's camera controls; CometAPI does not document ranges, these follow Runway's (-10..10).
MOTION_VECTOR_KEYS = ("x", "y", "z", "r", "bg_x_pan", "bg_y_pan")
MOTION_RANGE = (-10.0, 10.0)


class _Errors:
    """Collects one message list per argument, then raises them together."""

    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, []).append(message)

    def check(self, name: str, value: Any, test: Callable[[Any], bool], message: str) -> None:
        if not test(value):
            self.add(name, message)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _url(errors: _Errors, name: str, value: Any, *, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            errors.add(name, _("%(name)s is required.") % {"name": name})
        return None
    if not clean_url(value):
        errors.add(name, _("%(name)s must be an absolute http(s) URL.") % {"name": name})
        return None
    return str(value).strip()


def _prompt(errors: _Errors, value: Any, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add("prompt", _("%(name)s is required.") % {"name": "prompt"})
        return ""
    if not isinstance(value, str):
        errors.add("prompt", _("prompt must be a string."))
        return ""
    if len(value) > MAX_PROMPT_CHARS:
        errors.add(
            "prompt",
            _("prompt must be at most %(count)d characters.") % {"count": MAX_PROMPT_CHARS},
        )
    return value.strip()


def _model(errors: _Errors, value: Any) -> None:
    errors.check(
        "model",
        value,
        lambda v: isinstance(v, str) and MODEL_RE.fullmatch(v) is not None,
        _("model must be a model name such as 'gen4' or 'gen4_turbo'."),
    )


def _seconds(errors: _Errors, value: Any) -> None:
    errors.check(
        "seconds",
        value,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v in SECONDS_CHOICES,
        _("seconds must be 5 or 10."),
    )


def _unknown(errors: _Errors, extra: dict[str, Any]) -> None:
    for name in sorted(extra):
        errors.add(name, _("Unknown argument %(name)r.") % {"name": name})


def _motion_vector(errors: _Errors, value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        errors.add("motion_vector", _("motion_vector must be a dict of camera moves."))
        return None
    low, high = MOTION_RANGE
    for key, amount in value.items():
        if key not in MOTION_VECTOR_KEYS:
            errors.add(
                "motion_vector",
                _("motion_vector has an unknown key %(key)r; use %(keys)s.")
                % {"key": key, "keys": ", ".join(MOTION_VECTOR_KEYS)},
            )
        elif not _is_number(amount) or not low <= amount <= high:
            errors.add(
                "motion_vector",
                _("motion_vector[%(key)r] must be a number from -10 to 10.") % {"key": key},
            )
    return dict(value)


def generate_body(
    *,
    prompt: Any,
    image: Any,
    model: Any,
    ratio: Any,
    style: Any,
    seconds: Any,
    motion_vector: Any,
    end_image: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Body of ``POST /runway/pro/generate`` (image-to-video when ``image`` is given)."""
    errors = _Errors()
    _unknown(errors, extra)
    image_url = _url(errors, "image", image, required=False)
    end_url = _url(errors, "end_image", end_image, required=False)
    if end_url and not image_url and "image" not in errors.by_field:
        errors.add("end_image", _("end_image needs an image (the first frame)."))
    text = _prompt(errors, prompt, required=image_url is None and "image" not in errors.by_field)
    _model(errors, model)
    errors.check(
        "ratio",
        ratio,
        lambda v: isinstance(v, str) and RATIO_RE.fullmatch(v) is not None,
        _("ratio must look like '1280:720' (width:height)."),
    )
    if style is not None:
        errors.check(
            "style",
            style,
            lambda v: isinstance(v, str) and 0 < len(v) <= 64,
            _("style must be a short name such as 'cinematic'."),
        )
    _seconds(errors, seconds)
    vector = _motion_vector(errors, motion_vector)
    errors.raise_if_any()

    options: dict[str, Any] = {"seconds": seconds}
    if vector:
        options["motion_vector"] = vector
    body: dict[str, Any] = {"prompt": text, "model": model, "ratio": ratio}
    if style:
        body["style"] = style
    if image_url:
        body["image"] = image_url
    if end_url:
        # CometAPI does not name this field; ``last_image`` is what the same upstream uses
        # elsewhere (COMETAPI.md, "Routes").
        body["last_image"] = end_url
    body["options"] = options
    return body


def video_to_video_body(
    *,
    video: Any,
    prompt: Any,
    model: Any,
    structure_transformation: Any,
    flip: Any,
    seconds: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Body of ``POST /runway/pro/video2video``."""
    errors = _Errors()
    _unknown(errors, extra)
    video_url = _url(errors, "video", video, required=True)
    text = _prompt(errors, prompt, required=True)
    _model(errors, model)
    errors.check(
        "structure_transformation",
        structure_transformation,
        lambda v: _is_number(v) and 0 <= v <= 1,
        _("structure_transformation must be a number from 0 to 1."),
    )
    errors.check("flip", flip, lambda v: isinstance(v, bool), _("flip must be True or False."))
    _seconds(errors, seconds)
    errors.raise_if_any()
    return {
        "video": video_url,
        "model": model,
        "prompt": text,
        "options": {
            "structure_transformation": structure_transformation,
            "flip": flip,
            "seconds": seconds,
        },
    }


def act_one_body(*, video: Any, image: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """Body of ``POST /runway/pro/act_one`` (the performance video and the character image)."""
    errors = _Errors()
    _unknown(errors, extra)
    video_url = _url(errors, "video", video, required=True)
    image_url = _url(errors, "image", image, required=True)
    errors.raise_if_any()
    return {"video": video_url, "image": image_url}


def metadata(value: Any) -> dict[str, Any]:
    """The host's ``metadata`` as a JSON object (``{}`` for None); raises ValidationError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(
            {
                "metadata": [
                    _("metadata must be a dict (a JSON object); got %(type)s.")
                    % {"type": type(value).__name__}
                ]
            }
        )
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        message = _("metadata must be JSON-serialisable: %(error)s") % {"error": exc}
        raise ValidationError({"metadata": [message]}) from None
    return value


def idempotency_key(value: Any) -> str | None:
    """A clean idempotency key or None; raises ValidationError for a bad one."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise ValidationError(
            {"idempotency_key": [_("idempotency_key must be a string of 1 to 255 characters.")]}
        )
    return value
