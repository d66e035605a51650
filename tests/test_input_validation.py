"""Validation refuses what the database would refuse (issue 13), with no row and no request.

Runs on SQLite and, with DATABASE_URL, on PostgreSQL: on PostgreSQL a NUL reaching the database
is a DataError; on SQLite it would be stored and sent to the API. Either way, it must not get
that far.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from django_runway_feed import validation
from django_runway_feed.models import RunwayTask, TaskEvent
from django_runway_feed.testing import FakeCometAPI

pytestmark = pytest.mark.django_db

IMAGE = "https://example.com/first.png"
VIDEO = "https://example.com/source.mp4"
NUL = "\x00"
SURROGATE = "\ud800"


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def assert_nothing_happened(api: FakeCometAPI) -> None:
    assert api.create_requests == []
    assert RunwayTask.objects.count() == 0
    assert TaskEvent.objects.count() == 0


def refused(call: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        call()
    return info.value.message_dict


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"prompt": f"a cat{NUL}"}, "prompt", "prompt must not contain NUL characters."),
        (
            {"prompt": f"a cat{SURROGATE}"},
            "prompt",
            "prompt must not contain lone surrogates (text that is not valid Unicode).",
        ),
        ({"prompt": "a cat", "style": f"noir{NUL}"}, "style", "style must not contain NUL"),
        ({"image": f"{IMAGE}{NUL}"}, "image", "image must not contain NUL characters."),
        ({"image": f"{IMAGE}{SURROGATE}"}, "image", "image must not contain lone surrogates"),
        (
            {"prompt": "a cat", "idempotency_key": f"k{NUL}"},
            "idempotency_key",
            "idempotency_key must not contain NUL characters.",
        ),
        (
            {"prompt": "a cat", "idempotency_key": f"k{SURROGATE}"},
            "idempotency_key",
            "idempotency_key must not contain lone surrogates",
        ),
        (
            {"prompt": "a cat", "metadata": {"a": float("nan")}},
            "metadata",
            "metadata must not hold nan: JSON has no NaN or Infinity.",
        ),
        (
            {"prompt": "a cat", "metadata": {"a": [1, float("inf")]}},
            "metadata",
            "metadata must not hold inf: JSON has no NaN or Infinity.",
        ),
        (
            {"prompt": "a cat", "metadata": {"a": f"x{NUL}"}},
            "metadata",
            "metadata text must not contain NUL characters.",
        ),
        (
            {"prompt": "a cat", "metadata": {f"k{SURROGATE}": 1}},
            "metadata",
            "metadata text must not contain lone surrogates",
        ),
        (
            {"prompt": "a cat", "metadata": deep(5_000)},
            "metadata",
            f"metadata nests deeper than {validation.MAX_METADATA_DEPTH} levels.",
        ),
    ],
    ids=[
        "prompt NUL",
        "prompt surrogate",
        "style NUL",
        "image NUL",
        "image surrogate",
        "idempotency key NUL",
        "idempotency key surrogate",
        "metadata NaN",
        "metadata Infinity",
        "metadata NUL",
        "metadata key surrogate",
        "metadata 5000 deep",
    ],
)
def test_generate_unstorable_argument_is_refused(api, kwargs, field, message):
    errors = refused(lambda: RunwayTask.objects.generate(**kwargs))

    assert list(errors) == [field]
    assert errors[field][0].startswith(message)
    assert_nothing_happened(api)


def test_video_to_video_prompt_with_nul_is_refused(api):
    errors = refused(lambda: RunwayTask.objects.video_to_video(VIDEO, prompt=f"pixel{NUL}art"))

    assert errors == {"prompt": ["prompt must not contain NUL characters."]}
    assert_nothing_happened(api)


def test_act_one_video_with_nul_is_refused(api):
    errors = refused(lambda: RunwayTask.objects.act_one(f"{VIDEO}{NUL}", IMAGE))

    assert errors == {"video": ["video must not contain NUL characters."]}
    assert_nothing_happened(api)


def test_metadata_at_the_depth_limit_is_accepted(api):
    task = RunwayTask.objects.generate("a cat", metadata=deep(validation.MAX_METADATA_DEPTH - 1))

    assert task.status == "queued"


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        (
            "abc\ndef",
            "task_id must be printable (no line breaks, NUL or other control characters).",
        ),
        (
            f"abc{NUL}",
            "task_id must be printable (no line breaks, NUL or other control characters).",
        ),
        (f"abc{SURROGATE}", "task_id must be printable"),
        ("   ", "task_id must be a non-empty string of at most 128 characters."),
        ("x" * 129, "task_id must be a non-empty string of at most 128 characters."),
    ],
    ids=["line break", "NUL", "surrogate", "blank", "too long"],
)
def test_track_unprintable_task_id_is_refused(api, task_id, message):
    errors = refused(lambda: RunwayTask.objects.track(task_id))

    assert list(errors) == ["task_id"]
    assert errors["task_id"][0].startswith(message)
    assert_nothing_happened(api)
    assert api.call_count() == 0


def test_track_nan_metadata_is_refused(api):
    errors = refused(lambda: RunwayTask.objects.track("abc", metadata={"a": float("nan")}))

    assert errors == {"metadata": ["metadata must not hold nan: JSON has no NaN or Infinity."]}
    assert_nothing_happened(api)


def test_track_surrounding_blanks_are_dropped(api):
    assert RunwayTask.objects.track("  abc-1  ").task_id == "abc-1"


# -- the command line: a CommandError, never a traceback ------------------------------------------


def test_runway_submit_nan_metadata_is_a_command_error(api):
    with pytest.raises(CommandError) as error:
        call_command("runway_submit", "generate", "--prompt", "a cat", "--metadata", '{"a": NaN}')

    assert str(error.value) == (
        "Invalid arguments: metadata: metadata must not hold nan: JSON has no NaN or Infinity."
    )
    assert_nothing_happened(api)


def test_runway_submit_prompt_with_nul_is_a_command_error(api):
    with pytest.raises(CommandError) as error:
        call_command("runway_submit", "generate", "--prompt", f"a{NUL}cat")

    assert str(error.value) == "Invalid arguments: prompt: prompt must not contain NUL characters."
    assert_nothing_happened(api)


def test_runway_submit_deep_metadata_is_a_command_error(api):
    nested = '{"a": ' * 5_000 + "{}" + "}" * 5_000

    with pytest.raises(CommandError) as error:
        call_command("runway_submit", "generate", "--prompt", "a cat", "--metadata", nested)

    # The same words whether json gives up on the depth (3.11, 3.12) or the validation does.
    assert str(error.value) == (
        f"Invalid arguments: metadata: metadata nests deeper than "
        f"{validation.MAX_METADATA_DEPTH} levels."
    )
    assert_nothing_happened(api)


def test_runway_track_unprintable_id_is_a_command_error(api):
    with pytest.raises(CommandError) as error:
        call_command("runway_track", "abc\ndef")

    assert str(error.value) == (
        "task_id must be printable (no line breaks, NUL or other control characters)."
    )
    assert_nothing_happened(api)


@pytest.mark.parametrize("command", ["runway_poll", "runway_download"])
def test_task_commands_id_with_nul_finds_no_task(api, settings, command):
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "DOWNLOAD_RESULTS": True}
    with pytest.raises(CommandError) as error:
        call_command(command, "--task", f"abc{NUL}")

    assert "abc" in str(error.value)
    assert_nothing_happened(api)
