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
TASK_ID_MAX_CHARS = 128
IDEMPOTENCY_KEY_MAX_CHARS = 255
# How deep the host's metadata may nest. Deeper structures are refused before anything walks
# them recursively (json, the database driver), which would raise RecursionError far down.
MAX_METADATA_DEPTH = 32
# The messages a person most often sees are written for them (the example site's form shows
# them as they are); the others name the Python argument, for the developer.


def _url_missing(name: str) -> str:
    messages = {
        "image": _("Enter an image URL."),
        "end_image": _("Enter an end image URL."),
        "video": _("Enter a video URL."),
    }
    return messages.get(name) or _("Enter a URL for %(name)s.") % {"name": name}


def _url_not_http(name: str) -> str:
    messages = {
        "image": _("Enter an image URL that starts with http:// or https://."),
        "end_image": _("Enter an end image URL that starts with http:// or https://."),
        "video": _("Enter a video URL that starts with http:// or https://."),
    }
    return messages.get(name) or _(
        "Enter a URL for %(name)s that starts with http:// or https://."
    ) % {"name": name}


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


def text_problem(name: str, value: str) -> str:
    """Why a database would refuse to store ``value`` (the argument ``name``), or ``""``.

    PostgreSQL refuses NUL in text and JSON; a lone surrogate cannot be encoded to UTF-8 at all
    (SQLite would take the NUL, and the API would get it).
    """
    if "\x00" in value:
        return _("%(name)s must not contain NUL characters.") % {"name": name}
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _("%(name)s must not contain lone surrogates (text that is not valid Unicode).") % {
            "name": name
        }
    return ""


def _text(errors: _Errors, name: str, value: str) -> bool:
    """Record why ``value`` cannot be stored; True when it can."""
    problem = text_problem(name, value)
    if problem:
        errors.add(name, problem)
    return not problem


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _url(errors: _Errors, name: str, value: Any, *, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            errors.add(name, _url_missing(name))
        return None
    if isinstance(value, str) and not _text(errors, name, value):
        return None
    if not clean_url(value):
        errors.add(name, _url_not_http(name))
        return None
    return str(value).strip()


def _prompt(errors: _Errors, value: Any, *, required: bool, or_image: bool = False) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.add(
                "prompt", _("Enter a prompt or an image URL.") if or_image else _("Enter a prompt.")
            )
        return ""
    if not isinstance(value, str):
        errors.add("prompt", _("prompt must be a string."))
        return ""
    if not _text(errors, "prompt", value):
        return ""
    if len(value) > MAX_PROMPT_CHARS:
        errors.add(
            "prompt",
            _("Keep the prompt to %(limit)d characters (it has %(count)d).")
            % {"limit": MAX_PROMPT_CHARS, "count": len(value)},
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
    text = _prompt(
        errors,
        prompt,
        required=image_url is None and "image" not in errors.by_field,
        or_image=True,
    )
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
        if isinstance(style, str):
            _text(errors, "style", style)
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


def metadata_too_deep() -> str:
    """The message for metadata nested past ``MAX_METADATA_DEPTH``."""
    return _("metadata nests deeper than %(depth)d levels.") % {"depth": MAX_METADATA_DEPTH}


def _metadata_problem(value: Any, depth: int) -> str:
    """Why ``value`` (part of the metadata) cannot be stored as JSON, or ``""``."""
    if depth > MAX_METADATA_DEPTH:
        return metadata_too_deep()
    if isinstance(value, float) and not math.isfinite(value):
        return _("metadata must not hold %(value)r: JSON has no NaN or Infinity.") % {
            "value": value
        }
    if isinstance(value, str):
        return text_problem("metadata text", value)
    if isinstance(value, dict):
        for key, item in value.items():
            problem = (
                _metadata_problem(key, depth + 1) if isinstance(key, str) else ""
            ) or _metadata_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = _metadata_problem(item, depth + 1)
            if problem:
                return problem
    return ""


def metadata(value: Any) -> dict[str, Any]:
    """The host's ``metadata`` as a JSON object (``{}`` for None); raises ValidationError.

    Refuses what a database would: NaN and Infinity, NUL characters and lone surrogates in any
    key or string, and nesting deeper than ``MAX_METADATA_DEPTH``.
    """
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
    problem = _metadata_problem(value, 0)
    if problem:
        raise ValidationError({"metadata": [problem]})
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = _("metadata must be JSON-serialisable: %(error)s") % {"error": exc}
        raise ValidationError({"metadata": [message]}) from None
    return value


def idempotency_key(value: Any) -> str | None:
    """A clean idempotency key or None; raises ValidationError for a bad one."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= IDEMPOTENCY_KEY_MAX_CHARS:
        raise ValidationError(
            {"idempotency_key": [_("idempotency_key must be a string of 1 to 255 characters.")]}
        )
    problem = text_problem("idempotency_key", value)
    if problem:
        raise ValidationError({"idempotency_key": [problem]})
    return value


def is_task_id(value: Any) -> bool:
    """Whether ``value`` could be a provider's task id (printable, 1 to 128 characters)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= TASK_ID_MAX_CHARS
        and value.isprintable()
        and value == value.strip()
    )


def task_id(value: Any) -> str:
    """A provider's task id (surrounding blanks removed); raises ValidationError for a bad one.

    Ids are printable: one with a line break, a NUL or a lone surrogate can neither be stored
    everywhere nor ever match an answer of the feed.
    """
    if isinstance(value, str) and is_task_id(value.strip()):
        return value.strip()
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > TASK_ID_MAX_CHARS:
        message = _("task_id must be a non-empty string of at most %(count)d characters.") % {
            "count": TASK_ID_MAX_CHARS
        }
    else:
        message = _("task_id must be printable (no line breaks, NUL or other control characters).")
    raise ValidationError({"task_id": [message]})
