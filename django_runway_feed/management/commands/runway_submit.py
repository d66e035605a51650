from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from django_runway_feed import validation
from django_runway_feed.exceptions import RunwayFeedError
from django_runway_feed.models import RunwayTask

from ._base import RunwayCommand, add_django_options
from ._follow import add_follow_arguments, report


def _motion(value: str) -> dict[str, float]:
    """``x=1,z=-2.5`` -> {"x": 1.0, "z": -2.5}."""
    vector: dict[str, float] = {}
    for part in value.split(","):
        key, _sep, amount = part.partition("=")
        try:
            vector[key.strip()] = float(amount)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part[:40]!r} is not KEY=NUMBER") from None
    return vector


def invalid_arguments(error: ValidationError) -> CommandError:
    """One line naming each argument the validation refused, and why."""
    messages = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in error.message_dict.items())
    return CommandError(f"Invalid arguments: {messages}")


def _metadata(value: str) -> Any:
    """``--metadata``: JSON, checked further by the task's validation."""
    try:
        return json.loads(value)
    # argparse turns ArgumentTypeError into a usage error (exit status 2 on the command line,
    # CommandError through call_command); any other exception here would be a traceback.
    except RecursionError:
        # Deeper than json can read (on some Pythons): far past the validation's own limit.
        # A stand-in one level past that limit makes the validation refuse it in its own
        # words, the same on every Python.
        too_deep: dict[str, Any] = {}
        for _level in range(validation.MAX_METADATA_DEPTH + 1):
            too_deep = {"": too_deep}
        return too_deep
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


class Command(RunwayCommand):
    help = (
        "Create a Runway task through CometAPI: generate (text or image to video), video2video "
        "or act_one. --wait follows it with a progress display; the command fails if the task "
        "fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        routes = parser.add_subparsers(dest="route", required=True)

        generate = routes.add_parser("generate", help="Text to video, or image to video.")
        generate.add_argument(
            "--prompt", help="What the video shows (needed unless --image is given)."
        )
        generate.add_argument("--image", help="URL of the first frame (image to video).")
        generate.add_argument("--end-image", help="URL of the last frame.")
        generate.add_argument("--model", default="gen4", help="Runway model (default gen4).")
        generate.add_argument(
            "--ratio", default="1280:720", help="WIDTH:HEIGHT of the video (default 1280:720)."
        )
        generate.add_argument("--style", help="A style preset name, passed on as given.")
        generate.add_argument(
            "--seconds",
            type=int,
            choices=[5, 10],
            default=5,
            help="Length of the video in seconds (default 5).",
        )
        generate.add_argument("--motion-vector", type=_motion, help="e.g. x=1,z=-2")

        video2video = routes.add_parser("video2video", help="Restyle a video.")
        video2video.add_argument("--video", required=True, help="URL of the source video.")
        video2video.add_argument("--prompt", required=True, help="The style to apply.")
        video2video.add_argument("--model", default="gen4", help="Runway model (default gen4).")
        video2video.add_argument(
            "--structure-transformation",
            type=float,
            default=0.5,
            help="How far the result may depart from the source's structure, 0-1 (default 0.5).",
        )
        video2video.add_argument(
            "--flip", action="store_true", help="Send the route's flip option as true."
        )
        video2video.add_argument(
            "--seconds",
            type=int,
            choices=[5, 10],
            default=5,
            help="Length of the video in seconds (default 5).",
        )

        act_one = routes.add_parser("act_one", help="Move a performance onto a character.")
        act_one.add_argument("--video", required=True, help="URL of the performance video.")
        act_one.add_argument("--image", required=True, help="URL of the character image.")

        for sub in (generate, video2video, act_one):
            sub.add_argument(
                "--idempotency-key", help="A second call with the same key returns the first task."
            )
            sub.add_argument("--metadata", type=_metadata, help="JSON object stored on the row.")
            add_follow_arguments(sub)
            add_django_options(sub)

    def handle(self, *, route: str, **options: Any) -> None:
        common = {
            "idempotency_key": options["idempotency_key"],
            "metadata": options["metadata"],
        }
        try:
            if route == "generate":
                task = RunwayTask.objects.generate(
                    options["prompt"],
                    image=options["image"],
                    end_image=options["end_image"],
                    model=options["model"],
                    ratio=options["ratio"],
                    style=options["style"],
                    seconds=options["seconds"],
                    motion_vector=options["motion_vector"],
                    **common,
                )
            elif route == "video2video":
                task = RunwayTask.objects.video_to_video(
                    options["video"],
                    prompt=options["prompt"],
                    model=options["model"],
                    structure_transformation=options["structure_transformation"],
                    flip=options["flip"],
                    seconds=options["seconds"],
                    **common,
                )
            else:
                task = RunwayTask.objects.act_one(options["video"], options["image"], **common)
        except ValidationError as exc:
            raise invalid_arguments(exc) from exc
        except RunwayFeedError as exc:
            raise CommandError(str(exc)) from exc
        report(
            self,
            task,
            wait=options["wait"],
            timeout=options["timeout"],
            as_json=options["json"],
        )
