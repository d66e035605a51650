"""Fake tasks: where a task is in its script at a given time, and the bodies it produces.

Everything here is a pure function of a task and a time, so moving the server's clock moves
every task, and the same payload comes back however often a task is polled.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import math
import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from .scripts import TaskScript

TASK_NOT_EXIST_BODY: dict[str, Any] = {
    "code": "task_not_exist",
    "message": "task_not_exist",
    "data": None,
}

INVISIBLE = "invisible"
QUEUED = "queued"
THROTTLED = "throttled"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED, CANCELLED})

_PHASE_RANK = {
    INVISIBLE: 0,
    QUEUED: 1,
    THROTTLED: 2,
    RUNNING: 3,
    SUCCEEDED: 4,
    FAILED: 4,
    CANCELLED: 4,
}

_INNER_STATUS = {
    QUEUED: "PENDING",
    THROTTLED: "THROTTLED",
    RUNNING: "RUNNING",
    SUCCEEDED: "SUCCEEDED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
}
_WRAPPER_STATUS = {
    RUNNING: "IN_PROGRESS",
    SUCCEEDED: "SUCCESS",
    # The gateway has no cancelled status: a cancelled Runway task is a failed gateway task.
    FAILED: "FAILURE",
    CANCELLED: "FAILURE",
}
_LEGACY_STATUS = {
    QUEUED: "0",
    THROTTLED: "0",
    RUNNING: "1",
    FAILED: "2",
    CANCELLED: "2",
    SUCCEEDED: "3",
}
CANCELLED_MESSAGE = "The task was cancelled."
COARSE_RUNNING_PERCENT = 30


@dataclass(frozen=True)
class FakeTask:
    """One task held by the fake server."""

    task_id: str
    script: TaskScript
    created_at: float
    action: str
    route: str = ""
    prompt: str = ""
    callback_url: str = ""

    @property
    def visible_at(self) -> float:
        return self.created_at + self.script.invisible_for

    @property
    def throttled_at(self) -> float:
        return self.visible_at + self.script.queued_for

    @property
    def running_at(self) -> float:
        return self.throttled_at + self.script.throttled_for

    @property
    def finished_at(self) -> float:
        if self.script.outcome == "never":
            return math.inf
        return self.running_at + self.script.run_for

    def phase_at(self, now: float) -> str:
        """``invisible``, ``queued``, ``throttled``, ``running`` or the outcome, at ``now``."""
        if now < self.visible_at:
            return INVISIBLE
        if now < self.throttled_at:
            return QUEUED
        if now < self.running_at:
            return THROTTLED
        if now < self.finished_at:
            return RUNNING
        return self.script.outcome

    def phase_started_at(self, phase: str) -> float:
        return {
            INVISIBLE: self.created_at,
            QUEUED: self.visible_at,
            THROTTLED: self.throttled_at,
            RUNNING: self.running_at,
        }.get(phase, self.finished_at)

    def outputs_ready(self, now: float) -> bool:
        return (
            self.phase_at(now) == SUCCEEDED and now >= self.finished_at + self.script.output_delay
        )

    def output_urls(self, base_url: str, query: str = "") -> tuple[str, str, str]:
        """The video, poster and last-frame URLs, served by the fake server itself.

        ``query`` (``?expires=...&signature=...`` when the server's URLs expire) is appended.
        """
        prefix = f"{base_url}{OUTPUTS_PREFIX}{self.task_id}"
        return (
            f"{prefix}.mp4{query}",
            f"{prefix}-poster.png{query}",
            f"{prefix}-last.png{query}",
        )

    def run_fraction(self, now: float) -> float:
        if self.script.progress_style == "coarse":
            return COARSE_RUNNING_PERCENT / 100
        if self.script.run_for == 0 or math.isinf(self.script.run_for):
            return 0.0
        fraction = (now - self.running_at) / self.script.run_for
        # A running task never reports 100%: that is only said once it has finished.
        return max(0.0, min(0.99, fraction))

    def progress_percent(self, now: float) -> int:
        phase = self.phase_at(now)
        if phase in TERMINAL_PHASES:
            return 100
        if phase != RUNNING:
            return 0
        # The epsilon keeps float error from turning 0.29 * 100 into 28.
        return min(99, math.floor(self.run_fraction(now) * 100 + 1e-9))


def feed_payload(
    task: FakeTask, now: float, *, base_url: str, url_query: str = ""
) -> dict[str, Any]:
    """The body ``POST /runway/feed`` answers for ``task`` at ``now``, in the script's shape.

    ``url_query`` is appended to every output URL (signed, expiring URLs).
    """
    phase = task.phase_at(now)
    if phase == INVISIBLE:
        return dict(TASK_NOT_EXIST_BODY)
    # The wrapper may trail the Runway object (COMETAPI.md: they can disagree); it never falls
    # back to invisible once the task can be seen.
    wrapper_time = now - task.script.wrapper_lag
    if task.phase_at(wrapper_time) == INVISIBLE:
        wrapper_time = task.visible_at
    if task.script.shape == "legacy":
        return {
            "code": "success",
            "message": "",
            "data": _legacy_data(task, now, wrapper_time, base_url, url_query),
        }
    data = _gateway_data(task, now, wrapper_time, base_url, url_query)
    if task.script.shape == "bare":
        return data
    return {"code": "success", "message": "", "data": data}


def legacy_record(
    task: FakeTask, now: float, *, base_url: str, url_query: str = ""
) -> dict[str, Any]:
    """The legacy record (older pages and the callback body): digit status, ``video_url`` ..."""
    phase = task.phase_at(now)
    video = poster = last_frame = None
    if task.outputs_ready(now):
        video, poster, last_frame = task.output_urls(base_url, url_query)
    message = None
    if phase == FAILED:
        message = task.script.failure
    elif phase == CANCELLED:
        message = CANCELLED_MESSAGE
    return {
        "task_id": task.task_id,
        "status": _LEGACY_STATUS.get(phase, "0"),
        "prompt": task.prompt,
        "prompt_en": task.prompt,
        "video_url": video,
        "poster": poster,
        "last_frame": last_frame,
        "msg": message,
        "point": "320",
        "refund": "1" if phase in (FAILED, CANCELLED) else "0",
        "create_time": str(int(task.created_at)),
        "update_time": str(int(task.phase_started_at(phase))),
    }


def _wrapper_fields(task: FakeTask, wrapper_time: float) -> dict[str, Any]:
    phase = task.phase_at(wrapper_time)
    rank = _PHASE_RANK[phase]
    return {
        "task_id": task.task_id,
        "action": task.action,
        "status": _WRAPPER_STATUS.get(phase, task.script.queued_wrapper_status),
        "fail_reason": task.script.failure if phase == FAILED else "",
        "submit_time": int(task.created_at),
        "start_time": int(task.running_at) if rank >= _PHASE_RANK[RUNNING] else 0,
        "finish_time": int(task.finished_at) if phase in TERMINAL_PHASES else 0,
        "progress": f"{task.progress_percent(wrapper_time)}%",
    }


def _gateway_data(
    task: FakeTask, now: float, wrapper_time: float, base_url: str, url_query: str
) -> dict[str, Any]:
    data = _wrapper_fields(task, wrapper_time)
    location = task.script.output_location
    wrapper_has_output = task.phase_at(wrapper_time) == SUCCEEDED and task.outputs_ready(now)
    video = task.output_urls(base_url, url_query)[0]
    if wrapper_has_output and location == "fail_reason":
        data["fail_reason"] = video
    # Key order follows the documented example, with result_url where the English page lists it.
    ordered: dict[str, Any] = {}
    for key, value in data.items():
        ordered[key] = value
        if key == "fail_reason" and wrapper_has_output and location == "result_url":
            ordered["result_url"] = video
    if wrapper_has_output and location == "video_url":
        ordered["video_url"] = video
    ordered["data"] = _runway_task(task, now, base_url, url_query)
    return ordered


def _runway_task(task: FakeTask, now: float, base_url: str, url_query: str) -> dict[str, Any]:
    """Runway's own task object, as the gateway nests it in ``data.data``."""
    phase = task.phase_at(now)
    inner: dict[str, Any] = {
        "id": task.task_id,
        "status": _INNER_STATUS[phase],
        "createdAt": _iso(task.created_at),
    }
    if phase == RUNNING:
        inner["progress"] = round(task.run_fraction(now), 4)
    elif phase == FAILED:
        inner["failure"] = task.script.failure
        inner["failureCode"] = task.script.failure_code
    elif task.outputs_ready(now):
        video, poster, last_frame = task.output_urls(base_url, url_query)
        if task.script.output_location == "inner_output":
            inner["output"] = [video]
        elif task.script.output_location == "legacy_video_url":
            inner.update(video_url=video, poster=poster, last_frame=last_frame)
    return inner


def _legacy_data(
    task: FakeTask, now: float, wrapper_time: float, base_url: str, url_query: str
) -> dict[str, Any]:
    data = _wrapper_fields(task, wrapper_time)
    data["status"] = _LEGACY_STATUS[task.phase_at(wrapper_time)]
    # Legacy rows carry the reason in the record's ``msg``, not in the wrapper.
    data["fail_reason"] = ""
    data["data"] = legacy_record(task, now, base_url=base_url, url_query=url_query)
    return data


def _iso(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Output files -------------------------------------------------------------------------------

# Where the server serves output files: ``GET /outputs/<task_id>.mp4`` and the two images.
OUTPUTS_PREFIX: Final = "/outputs/"
VIDEO_CONTENT_TYPE = "video/mp4"
IMAGE_CONTENT_TYPE = "image/png"
_OUTPUT_SUFFIXES = (
    ("-poster.png", IMAGE_CONTENT_TYPE),
    ("-last.png", IMAGE_CONTENT_TYPE),
    (".mp4", VIDEO_CONTENT_TYPE),
)


def parse_output_name(name: str) -> tuple[str, str, str] | None:
    """``(task_id, suffix, content_type)`` for an output file name, or None."""
    for suffix, content_type in _OUTPUT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix, content_type
    return None


def output_bytes(task_id: str, suffix: str) -> bytes:
    """A few KB of deterministic bytes: a playable MP4 clip, or a valid PNG made from the name."""
    if suffix.endswith(".png"):
        return _png(f"{task_id}{suffix}".encode())
    # Every task serves the same clip: a video element must be able to play what it gets.
    return sample_video()


def _noise(seed: bytes, size: int) -> bytes:
    blocks = (
        hashlib.sha256(seed + index.to_bytes(4, "big")).digest() for index in range(size // 32 + 1)
    )
    return b"".join(blocks)[:size]


@functools.cache
def sample_video() -> bytes:
    """A real, playable MP4 (1 s, 64x64, H.264 baseline, no audio; browsers play it).

    Made with ``ffmpeg -f lavfi -i testsrc2=size=64x64:rate=12:duration=1 -c:v libx264
    -profile:v baseline -pix_fmt yuv420p -crf 35 -movflags +faststart -an sample.mp4``.
    """
    return resources.files(__package__).joinpath("media/sample.mp4").read_bytes()


def _png(seed: bytes) -> bytes:
    width = height = 32
    row_bytes = width * 3
    pixels = _noise(seed, row_bytes * height)
    raw = b"".join(
        b"\x00" + pixels[row * row_bytes : (row + 1) * row_bytes] for row in range(height)
    )

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def signed_query(secret: bytes, task_id: str, expires: int) -> str:
    """The query string of an expiring output URL: ``?expires=<epoch>&signature=<hmac>``."""
    return f"?expires={expires}&signature={_signature(secret, task_id, expires)}"


def check_signed_query(
    secret: bytes, task_id: str, expires: str | None, signature: str | None, now: float
) -> str:
    """``""`` when an output request's query is valid at ``now``, else why not (403 body)."""
    if not expires or not signature or not expires.isdigit():
        return "Missing expires or signature."
    if not hmac.compare_digest(signature, _signature(secret, task_id, int(expires))):
        return "Signature does not match."
    if now > int(expires):
        return "Request has expired."
    return ""


def _signature(secret: bytes, task_id: str, expires: int) -> str:
    return hmac.new(secret, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]
