from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_runway_feed.exceptions import (
    InvalidResponseError,
    RunwayFeedError,
    TaskNotVisibleError,
)
from django_runway_feed.feed import (
    INNER_STATUSES,
    WRAPPER_STATUSES,
    FeedSnapshot,
    Output,
    parse_feed,
)
from django_runway_feed.statuses import Status

FIXTURES = Path(__file__).parent / "fixtures" / "feed"
TASK_ID = "3d957031-9a2a-45e2-9dc7-bc8513059c50"
VIDEO = "https://cdn.example.com/video.mp4"
POSTER = "https://cdn.example.com/poster.png"
LAST_FRAME = "https://cdn.example.com/last.png"
HUGE = 10**5000  # str() of it raises ValueError: the parser must never try
NOT_VISIBLE_MESSAGE = (
    "the feed does not know this task (task_not_exist); a new task can stay invisible "
    "for a few seconds: poll again shortly"
)


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def feed(*, inner: Any = None, **fields: Any) -> dict[str, Any]:
    """A wrapped feed response for TASK_ID with the given record fields."""
    record: dict[str, Any] = {"task_id": TASK_ID, **fields}
    if inner is not None:
        record["data"] = inner
    return {"code": "success", "message": "", "data": record}


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


# --- documented wire examples ---------------------------------------------------------------


def test_parse_feed_documented_queued_example():
    snapshot = parse_feed(load_fixture("feed-queued-documented"))

    assert snapshot == FeedSnapshot(
        task_id=TASK_ID,
        status=Status.QUEUED,
        provider_status="QUEUED",
        provider_inner_status="PENDING",
        progress=0,
        outputs=(),
        failure_code="",
        fail_reason="",
        action="IMAGE_TO_VIDEO",
        throttled=False,
        submitted_at=utc(2026, 3, 13, 1, 52, 46),
        started_at=None,
        finished_at=None,
        unknown_statuses=(),
    )


def test_parse_feed_raw_is_the_payload_as_given():
    payload = load_fixture("feed-queued-documented")

    assert parse_feed(payload).raw is payload


def test_parse_feed_bare_record_parses_like_wrapped():
    wrapped = load_fixture("feed-queued-documented")

    assert parse_feed(wrapped["data"]) == parse_feed(wrapped)


def test_parse_feed_legacy_callback_example():
    snapshot = parse_feed(load_fixture("callback-legacy-succeeded"))

    base = "https://runwaycdn.cometapi.com/attachments/video/runway/20241011/"
    assert snapshot == FeedSnapshot(
        task_id="d51c94db-f7fa-4ad3-a083-b8918686c478",
        status=Status.SUCCEEDED,
        provider_status="3",
        progress=100,
        outputs=(
            Output("video", base + "8af2304880d6b32bfff5f0ea33007566.mp4"),
            Output("poster", base + "6771c68bf540b62a96e7c4a5b2b375a7.png"),
            Output("last_frame", base + "8af7cc2b46fc7ad5d1e0efedd0bd0893.png"),
        ),
        submitted_at=utc(2024, 10, 11, 4, 56, 36),
        finished_at=utc(2024, 10, 11, 5, 2, 35),
    )


def test_parse_feed_official_task_as_inner_object():
    payload = feed(status="SUCCESS", inner=load_fixture("official-task-succeeded"))

    snapshot = parse_feed(payload)

    assert snapshot == FeedSnapshot(
        task_id=TASK_ID,
        status=Status.SUCCEEDED,
        provider_status="SUCCESS",
        provider_inner_status="SUCCEEDED",
        progress=100,
        outputs=(Output("video", "https://example.com/output.mp4"),),
        submitted_at=dt.datetime(2026, 5, 1, 12, 47, 47, 351000, tzinfo=dt.UTC),
    )


def test_parse_feed_official_task_bare():
    snapshot = parse_feed(load_fixture("official-task-succeeded"))

    assert snapshot == FeedSnapshot(
        task_id="d0658ae1-bbdd-4adc-aaba-fd8070e14d79",
        status=Status.SUCCEEDED,
        provider_inner_status="SUCCEEDED",
        progress=100,
        outputs=(Output("video", "https://example.com/output.mp4"),),
        submitted_at=dt.datetime(2026, 5, 1, 12, 47, 47, 351000, tzinfo=dt.UTC),
    )


def test_parse_feed_official_task_wrapped_without_record():
    payload = {"code": 200, "data": load_fixture("official-task-succeeded")}

    assert parse_feed(payload).task_id == "d0658ae1-bbdd-4adc-aaba-fd8070e14d79"


def test_parse_feed_task_not_exist_example_raises_not_visible():
    with pytest.raises(TaskNotVisibleError) as excinfo:
        parse_feed(load_fixture("feed-task-not-exist"))

    assert str(excinfo.value) == NOT_VISIBLE_MESSAGE


def test_parse_feed_task_not_exist_example_has_code():
    with pytest.raises(TaskNotVisibleError) as excinfo:
        parse_feed(load_fixture("feed-task-not-exist"))

    assert excinfo.value.code == "task_not_exist"


def test_parse_feed_error_envelope_example_includes_provider_message():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(load_fixture("error-envelope"))

    assert str(excinfo.value) == (
        "feed request failed: model name is required (request id: 20260313095246123456789)"
        " (code invalid_request)"
    )


def test_parse_feed_error_envelope_example_has_code():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(load_fixture("error-envelope"))

    assert excinfo.value.code == "invalid_request"


def test_parse_feed_create_success_example_has_no_status():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(load_fixture("create-success"))

    assert str(excinfo.value) == (
        "feed response for task 196642a0-05e1-441a-981e-eb0c1f5d983b has no status"
    )


def test_parse_feed_create_success_older_example_has_no_status():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(load_fixture("create-success-older"))

    assert str(excinfo.value) == (
        "feed response for task 196642a0-05e1-441a-981e-eb0c1f5d983b has no status"
    )


def test_parse_feed_create_refused_example_reports_code_and_msg():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(load_fixture("create-refused-callback-url-empty"))

    assert str(excinfo.value) == "feed response code is 400, not success: callback_url_empty"


# --- status vocabularies --------------------------------------------------------------------

EXPECTED_WRAPPER_STATUSES = {
    "NOT_START": Status.QUEUED,
    "SUBMITTED": Status.QUEUED,
    "QUEUED": Status.QUEUED,
    "IN_PROGRESS": Status.RUNNING,
    "SUCCESS": Status.SUCCEEDED,
    "FAILURE": Status.FAILED,
    "UNKNOWN": None,
    "0": Status.QUEUED,
    "1": Status.RUNNING,
    "2": Status.FAILED,
    "3": Status.SUCCEEDED,
}
EXPECTED_INNER_STATUSES = {
    "PENDING": Status.QUEUED,
    "THROTTLED": Status.QUEUED,
    "RUNNING": Status.RUNNING,
    "SUCCEEDED": Status.SUCCEEDED,
    "FAILED": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
    "0": Status.QUEUED,
    "1": Status.RUNNING,
    "2": Status.FAILED,
    "3": Status.SUCCEEDED,
}
EXPECTED_LEGACY_DIGITS = {
    0: Status.QUEUED,
    1: Status.RUNNING,
    2: Status.FAILED,
    3: Status.SUCCEEDED,
}


def test_wrapper_status_table_covers_exactly_the_documented_vocabulary():
    assert set(WRAPPER_STATUSES) == set(EXPECTED_WRAPPER_STATUSES)


def test_inner_status_table_covers_exactly_the_documented_vocabulary():
    assert set(INNER_STATUSES) == set(EXPECTED_INNER_STATUSES)


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_WRAPPER_STATUSES.items()))
def test_parse_feed_wrapper_status_maps(raw, expected):
    assert parse_feed(feed(status=raw)).status == expected


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_INNER_STATUSES.items()))
def test_parse_feed_inner_status_maps(raw, expected):
    assert parse_feed(feed(inner={"status": raw})).status == expected


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_LEGACY_DIGITS.items()))
def test_parse_feed_wrapper_int_status_maps_like_digit_string(raw, expected):
    assert parse_feed(feed(status=raw)).status == expected


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_LEGACY_DIGITS.items()))
def test_parse_feed_inner_int_status_maps_like_digit_string(raw, expected):
    assert parse_feed(feed(inner={"status": raw})).status == expected


def test_parse_feed_int_status_kept_as_digit_string():
    assert parse_feed(feed(status=3)).provider_status == "3"


@pytest.mark.parametrize(
    ("raw", "expected"), [("queued", Status.QUEUED), ("Success", Status.SUCCEEDED)]
)
def test_parse_feed_status_matching_ignores_case(raw, expected):
    assert parse_feed(feed(status=raw)).status == expected


def test_parse_feed_provider_status_keeps_case():
    assert parse_feed(feed(status="in_progress")).provider_status == "in_progress"


def test_parse_feed_provider_status_is_stripped():
    assert parse_feed(feed(status="  QUEUED\n")).provider_status == "QUEUED"


def test_parse_feed_provider_inner_status_is_stripped():
    assert parse_feed(feed(inner={"status": " RUNNING "})).provider_inner_status == "RUNNING"


def test_parse_feed_provider_status_truncated_to_64_chars():
    assert parse_feed(feed(status="X" * 100)).provider_status == "X" * 64


def test_parse_feed_inner_throttled_sets_throttled():
    snapshot = parse_feed(feed(status="QUEUED", inner={"status": "THROTTLED"}))

    assert snapshot.throttled is True


def test_parse_feed_inner_pending_is_not_throttled():
    assert parse_feed(feed(status="QUEUED", inner={"status": "PENDING"})).throttled is False


def test_parse_feed_throttled_ignored_once_wrapper_says_running():
    snapshot = parse_feed(feed(status="IN_PROGRESS", inner={"status": "THROTTLED"}))

    assert (snapshot.status, snapshot.throttled) == (Status.RUNNING, False)


def test_parse_feed_wrapper_unknown_gives_no_status():
    assert parse_feed(feed(status="UNKNOWN")).status is None


def test_parse_feed_wrapper_unknown_is_not_an_unknown_status():
    assert parse_feed(feed(status="UNKNOWN")).unknown_statuses == ()


def test_parse_feed_unrecognised_status_gives_no_status():
    assert parse_feed(feed(status="EXPLODED")).status is None


def test_parse_feed_unrecognised_status_listed():
    snapshot = parse_feed(feed(status="EXPLODED", inner={"status": "VANISHED"}))

    assert snapshot.unknown_statuses == ("EXPLODED", "VANISHED")


def test_parse_feed_unrecognised_statuses_listed_once():
    snapshot = parse_feed(feed(status="EXPLODED", inner={"status": "EXPLODED"}))

    assert snapshot.unknown_statuses == ("EXPLODED",)


def test_parse_feed_unrecognised_wrapper_status_does_not_hide_inner():
    snapshot = parse_feed(feed(status="EXPLODED", inner={"status": "RUNNING"}))

    assert snapshot.status == Status.RUNNING


def test_parse_feed_vocabularies_stay_in_their_position():
    # "SUCCEEDED" is Runway's word, not the gateway's.
    assert parse_feed(feed(status="SUCCEEDED")).unknown_statuses == ("SUCCEEDED",)


def test_parse_feed_unrecognised_digit_listed():
    assert parse_feed(feed(status=7)).unknown_statuses == ("7",)


@pytest.mark.parametrize(
    ("raw", "marker"),
    [([], "<array>"), ({"a": 1}, "<object>"), (True, "<boolean>"), (3.0, "<number>")],
)
def test_parse_feed_status_of_wrong_type_listed_as_marker(raw, marker):
    assert parse_feed(feed(status=raw)).unknown_statuses == (marker,)


def test_parse_feed_huge_int_status_listed_as_marker():
    assert parse_feed(feed(status=HUGE)).unknown_statuses == ("<number>",)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_parse_feed_no_status_anywhere_raises(raw):
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(feed(status=raw, inner={"status": raw}))

    assert str(excinfo.value) == f"feed response for task {TASK_ID} has no status"


# --- merge rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrapper", "inner", "expected"),
    [
        ("SUCCESS", "RUNNING", Status.SUCCEEDED),
        ("QUEUED", "RUNNING", Status.RUNNING),
        ("SUCCESS", "FAILED", Status.FAILED),
        ("FAILURE", "SUCCEEDED", Status.SUCCEEDED),
        ("SUCCESS", "CANCELLED", Status.CANCELLED),
        ("IN_PROGRESS", "PENDING", Status.RUNNING),
        ("FAILURE", "RUNNING", Status.FAILED),
        ("NOT_START", "THROTTLED", Status.QUEUED),
        ("3", "FAILED", Status.FAILED),
        ("UNKNOWN", "RUNNING", Status.RUNNING),
    ],
)
def test_parse_feed_merges_wrapper_and_inner_status(wrapper, inner, expected):
    assert parse_feed(feed(status=wrapper, inner={"status": inner})).status == expected


# --- envelopes and shapes -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["success", "SUCCESS", 200, "200", " 200 "])
def test_parse_feed_accepts_success_codes(code):
    payload = {"code": code, "data": {"task_id": TASK_ID, "status": "QUEUED"}}

    assert parse_feed(payload).status == Status.QUEUED


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (500, "feed response code is 500, not success"),
        ("error", "feed response code is 'error', not success"),
        (True, "feed response code is boolean, not success"),
        (200.0, "feed response code is number, not success"),
        (None, "feed response code is null, not success"),
        pytest.param(HUGE, "feed response code is number, not success", id="huge"),
    ],
)
def test_parse_feed_rejects_other_codes(code, message):
    payload = {"code": code, "data": {"task_id": TASK_ID, "status": "QUEUED"}}

    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(payload)

    assert str(excinfo.value) == message


def test_parse_feed_rejected_code_includes_message():
    payload = {"code": "fail", "message": "quota exhausted", "data": None}

    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(payload)

    assert str(excinfo.value) == "feed response code is 'fail', not success: quota exhausted"


def test_parse_feed_rejected_code_kept_on_error():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"code": "insufficient_user_quota", "data": None})

    assert excinfo.value.code == "insufficient_user_quota"


@pytest.mark.parametrize(("data", "kind"), [(None, "null"), ([], "array"), ("x", "string")])
def test_parse_feed_success_without_data_object_raises(data, kind):
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"code": "success", "data": data})

    assert str(excinfo.value) == (
        f"feed response has code success but its data is {kind}, not an object"
    )


def test_parse_feed_wrapper_without_code_is_unwrapped():
    payload = {"message": "", "data": {"task_id": TASK_ID, "status": "IN_PROGRESS"}}

    assert parse_feed(payload).status == Status.RUNNING


@pytest.mark.parametrize(
    ("payload", "kind"),
    [([], "array"), ("ok", "string"), (None, "null"), (200, "number"), (False, "boolean")],
)
def test_parse_feed_non_object_raises(payload, kind):
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(payload)

    assert str(excinfo.value) == f"feed response is not a JSON object (got {kind})"


def test_parse_feed_inner_that_is_not_an_object_ignored():
    snapshot = parse_feed(feed(status="IN_PROGRESS", inner=["RUNNING"]))

    assert (snapshot.status, snapshot.provider_inner_status) == (Status.RUNNING, "")


# --- task id --------------------------------------------------------------------------------


def test_parse_feed_task_id_prefers_wrapper_record():
    assert parse_feed(feed(status="QUEUED", inner={"id": "inner-id"})).task_id == TASK_ID


def test_parse_feed_task_id_falls_back_to_inner_id():
    payload = {"code": "success", "data": {"status": "QUEUED", "data": {"id": "inner-id"}}}

    assert parse_feed(payload).task_id == "inner-id"


def test_parse_feed_task_id_falls_back_to_top_level():
    payload = {"code": "success", "task_id": "outer-id", "data": {"status": "QUEUED"}}

    assert parse_feed(payload).task_id == "outer-id"


def test_parse_feed_task_id_skips_non_string_candidates():
    payload = feed(status="QUEUED", inner={"id": "inner-id"})
    payload["data"]["task_id"] = 12345

    assert parse_feed(payload).task_id == "inner-id"


def test_parse_feed_task_id_is_stripped():
    payload = {"task_id": "  abc\n", "status": "QUEUED"}

    assert parse_feed(payload).task_id == "abc"


def test_parse_feed_task_id_of_128_chars_accepted():
    assert parse_feed({"task_id": "a" * 128, "status": "QUEUED"}).task_id == "a" * 128


@pytest.mark.parametrize("task_id", ["a" * 129, "abc\x00def", "abc\u2028def"])
def test_parse_feed_task_id_invalid_raises(task_id):
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"task_id": task_id, "status": "QUEUED"})

    assert str(excinfo.value) == (
        "feed response task id is not a printable string of at most 128 characters"
    )


@pytest.mark.parametrize("task_id", [None, "", "   ", 42, ["abc"]])
def test_parse_feed_task_id_missing_raises(task_id):
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"task_id": task_id, "status": "QUEUED"})

    assert str(excinfo.value) == "feed response has no task_id"


# --- action ---------------------------------------------------------------------------------


def test_parse_feed_action_kept_raw():
    assert parse_feed(feed(status="QUEUED", action="VIDEO_TO_VIDEO")).action == "VIDEO_TO_VIDEO"


def test_parse_feed_action_truncated_to_64_chars():
    assert parse_feed(feed(status="QUEUED", action="A" * 100)).action == "A" * 64


def test_parse_feed_action_not_a_string_is_empty():
    assert parse_feed(feed(status="QUEUED", action=7)).action == ""


# --- outputs --------------------------------------------------------------------------------


def test_parse_feed_output_from_result_url():
    snapshot = parse_feed(feed(status="SUCCESS", result_url=VIDEO))

    assert snapshot.outputs == (Output("video", VIDEO),)


def test_parse_feed_output_from_inner_output_list():
    other = "https://cdn.example.com/second.mp4"
    snapshot = parse_feed(feed(status="SUCCESS", inner={"output": [VIDEO, other]}))

    assert snapshot.outputs == (Output("video", VIDEO), Output("video", other))


def test_parse_feed_output_from_inner_output_string():
    snapshot = parse_feed(feed(status="SUCCESS", inner={"output": VIDEO}))

    assert snapshot.outputs == (Output("video", VIDEO),)


def test_parse_feed_outputs_from_inner_legacy_keys():
    inner = {"video_url": VIDEO, "poster": POSTER, "last_frame": LAST_FRAME}

    snapshot = parse_feed(feed(status="SUCCESS", inner=inner))

    assert snapshot.outputs == (
        Output("video", VIDEO),
        Output("poster", POSTER),
        Output("last_frame", LAST_FRAME),
    )


def test_parse_feed_outputs_from_record_legacy_keys():
    snapshot = parse_feed(
        feed(status="SUCCESS", video_url=VIDEO, poster=POSTER, last_frame=LAST_FRAME)
    )

    assert snapshot.outputs == (
        Output("video", VIDEO),
        Output("poster", POSTER),
        Output("last_frame", LAST_FRAME),
    )


def test_parse_feed_outputs_from_bare_record_top_level():
    payload = {"task_id": TASK_ID, "status": "3", "video_url": VIDEO, "poster": POSTER}

    assert parse_feed(payload).outputs == (Output("video", VIDEO), Output("poster", POSTER))


def test_parse_feed_outputs_keep_every_location_in_order():
    def url(name: str) -> str:
        return f"https://cdn.example.com/{name}"

    payload = feed(
        status="SUCCESS",
        result_url=url("result.mp4"),
        video_url=url("record.mp4"),
        poster=url("record.png"),
        last_frame=url("record-last.png"),
        fail_reason=url("quirk.mp4"),
        inner={
            "output": [url("output-1.mp4"), url("output-2.mp4")],
            "video_url": url("inner.mp4"),
            "poster": url("inner.png"),
            "last_frame": url("inner-last.png"),
        },
    )

    assert parse_feed(payload).outputs == (
        Output("video", url("result.mp4")),
        Output("video", url("output-1.mp4")),
        Output("video", url("output-2.mp4")),
        Output("video", url("inner.mp4")),
        Output("poster", url("inner.png")),
        Output("last_frame", url("inner-last.png")),
        Output("video", url("record.mp4")),
        Output("poster", url("record.png")),
        Output("last_frame", url("record-last.png")),
        Output("video", url("quirk.mp4")),
    )


def test_parse_feed_outputs_deduplicated():
    payload = feed(status="SUCCESS", result_url=VIDEO, video_url=VIDEO, inner={"output": [VIDEO]})

    assert parse_feed(payload).outputs == (Output("video", VIDEO),)


def test_parse_feed_outputs_first_kind_wins_for_duplicate_url():
    payload = feed(status="SUCCESS", poster=VIDEO, inner={"output": [VIDEO]})

    assert parse_feed(payload).outputs == (Output("video", VIDEO),)


def test_parse_feed_outputs_read_only_first_16_list_items():
    urls = [f"https://cdn.example.com/{n}.mp4" for n in range(20)]

    snapshot = parse_feed(feed(status="SUCCESS", inner={"output": urls}))

    assert snapshot.outputs == tuple(Output("video", url) for url in urls[:16])


def test_parse_feed_fail_reason_url_is_output_when_succeeded():
    snapshot = parse_feed(feed(status="SUCCESS", fail_reason=VIDEO))

    assert snapshot.outputs == (Output("video", VIDEO),)


def test_parse_feed_fail_reason_url_is_not_fail_reason_when_succeeded():
    assert parse_feed(feed(status="SUCCESS", fail_reason=VIDEO)).fail_reason == ""


def test_parse_feed_fail_reason_url_ignored_when_running():
    assert parse_feed(feed(status="IN_PROGRESS", fail_reason=VIDEO)).outputs == ()


def test_parse_feed_fail_reason_url_output_after_merge_to_succeeded():
    payload = feed(status="IN_PROGRESS", fail_reason=VIDEO, inner={"status": "SUCCEEDED"})

    assert parse_feed(payload).outputs == (Output("video", VIDEO),)


def test_parse_feed_result_url_is_first_video():
    payload = feed(status="SUCCESS", video_url=VIDEO, inner={"poster": POSTER})

    assert parse_feed(payload).result_url == VIDEO


def test_parse_feed_result_url_empty_without_video():
    assert parse_feed(feed(status="SUCCESS", poster=POSTER)).result_url == ""


@pytest.mark.parametrize(
    "value",
    [
        "javascript:alert(1)",
        "data:video/mp4;base64,AAAA",
        "/relative/video.mp4",
        "video.mp4",
        "//cdn.example.com/video.mp4",
        "ftp://cdn.example.com/video.mp4",
        "file:///etc/passwd",
        "https://",
        "https:///video.mp4",
        "https://cdn.example.com/my video.mp4",
        "https://cdn.example.com/video.mp4\nSet-Cookie: x",
        "https://cdn.example.com/\x00.mp4",
        "https://cdn.example.com/\u202e.mp4",
        "https://[::1/video.mp4",
        "https://cdn.example.com:99999/video.mp4",
        "https://cdn.example.com/" + "a" * 2048,
        "",
        123,
        None,
        True,
        ["https://cdn.example.com/video.mp4"],
        {"url": "https://cdn.example.com/video.mp4"},
    ],
)
def test_parse_feed_unsafe_output_ignored(value):
    assert parse_feed(feed(status="SUCCESS", result_url=value)).outputs == ()


@pytest.mark.parametrize(
    "value",
    [
        "http://cdn.example.com/video.mp4",
        "HTTPS://CDN.example.com/video.mp4",
        "https://cdn.example.com:8443/v.mp4?sig=a%20b",
        "https://[2001:db8::1]/video.mp4",
        "https://cdn.example.com/" + "a" * 2024,
    ],
)
def test_parse_feed_http_output_accepted(value):
    assert parse_feed(feed(status="SUCCESS", result_url=value)).outputs == (Output("video", value),)


def test_parse_feed_output_url_is_stripped():
    snapshot = parse_feed(feed(status="SUCCESS", result_url=f"  {VIDEO}\n"))

    assert snapshot.outputs == (Output("video", VIDEO),)


def test_parse_feed_nested_lists_in_output_ignored():
    assert parse_feed(feed(status="SUCCESS", inner={"output": [[VIDEO]]})).outputs == ()


# --- failures -------------------------------------------------------------------------------


def test_parse_feed_wrapper_failure_keeps_fail_reason():
    snapshot = parse_feed(feed(status="FAILURE", fail_reason="upstream timed out"))

    assert snapshot.fail_reason == "upstream timed out"


def test_parse_feed_wrapper_failure_has_no_failure_code():
    assert parse_feed(feed(status="FAILURE", fail_reason="boom")).failure_code == ""


def test_parse_feed_inner_failure_text_is_fail_reason():
    inner = {
        "status": "FAILED",
        "failure": "Content moderation",
        "failureCode": "SAFETY.INPUT.TEXT",
    }

    assert parse_feed(feed(inner=inner)).fail_reason == "Content moderation"


def test_parse_feed_inner_failure_code_kept():
    inner = {
        "status": "FAILED",
        "failure": "Content moderation",
        "failureCode": "SAFETY.INPUT.TEXT",
    }

    assert parse_feed(feed(inner=inner)).failure_code == "SAFETY.INPUT.TEXT"


def test_parse_feed_wrapper_fail_reason_preferred_over_inner_failure():
    payload = feed(
        status="FAILURE",
        fail_reason="gateway says no",
        inner={"status": "FAILED", "failure": "runway says no"},
    )

    assert parse_feed(payload).fail_reason == "gateway says no"


def test_parse_feed_empty_wrapper_fail_reason_falls_back_to_inner_failure():
    payload = feed(status="FAILURE", fail_reason="", inner={"status": "FAILED", "failure": "no"})

    assert parse_feed(payload).fail_reason == "no"


def test_parse_feed_legacy_failed_msg_is_fail_reason():
    payload = {"task_id": TASK_ID, "status": "2", "msg": "generation failed, refunded"}

    assert parse_feed(payload).fail_reason == "generation failed, refunded"


def test_parse_feed_legacy_msg_ignored_when_not_failed():
    payload = {"task_id": TASK_ID, "status": "1", "msg": "working"}

    assert parse_feed(payload).fail_reason == ""


def test_parse_feed_fail_reason_text_dropped_when_running():
    assert parse_feed(feed(status="IN_PROGRESS", fail_reason="retrying")).fail_reason == ""


def test_parse_feed_failure_code_dropped_when_not_failed():
    payload = feed(status="SUCCESS", inner={"status": "RUNNING", "failureCode": "INTERNAL"})

    assert parse_feed(payload).failure_code == ""


def test_parse_feed_cancelled_keeps_failure_text():
    payload = feed(inner={"status": "CANCELLED", "failure": "cancelled by user"})

    assert parse_feed(payload).fail_reason == "cancelled by user"


def test_parse_feed_failed_fail_reason_url_is_text_not_output():
    snapshot = parse_feed(feed(status="FAILURE", fail_reason=VIDEO))

    assert (snapshot.fail_reason, snapshot.outputs) == (VIDEO, ())


def test_parse_feed_fail_reason_truncated_to_2000_chars():
    assert parse_feed(feed(status="FAILURE", fail_reason="x" * 5000)).fail_reason == "x" * 2000


def test_parse_feed_failure_code_truncated_to_128_chars():
    payload = feed(inner={"status": "FAILED", "failureCode": "C" * 500})

    assert parse_feed(payload).failure_code == "C" * 128


def test_parse_feed_failure_of_wrong_type_ignored():
    payload = feed(inner={"status": "FAILED", "failure": ["x"], "failureCode": 42})

    snapshot = parse_feed(payload)

    assert (snapshot.fail_reason, snapshot.failure_code) == ("", "")


# --- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45%", 45),
        ("45", 45),
        (45, 45),
        (45.0, 45),
        (" 45 % ", 45),
        ("45.9%", 45),
        ("0%", 0),
        ("100%", 100),
        (0.45, 45),
        ("0.45", 45),
        (0.29, 29),
        (1.0, 1),
        (1, 1),
        ("0.45%", 0),
        ("250%", 100),
        (250, 100),
        (-5, 0),
        ("-5%", 0),
        pytest.param(HUGE, 100, id="huge"),
        pytest.param(-HUGE, 0, id="minus-huge"),
        (1e308, 100),
    ],
)
def test_parse_feed_wrapper_progress(value, expected):
    assert parse_feed(feed(status="IN_PROGRESS", progress=value)).progress == expected


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "",
        "%",
        "nan",
        "inf",
        "1_0",
        "4.5e1",
        "\u0664\u0665",
        "9" * 100,
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        None,
        [45],
        {"percent": 45},
    ],
)
def test_parse_feed_garbage_progress_is_none(value):
    assert parse_feed(feed(status="IN_PROGRESS", progress=value)).progress is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.45, 45),
        (0, 0),
        (1, 100),
        (1.0, 100),
        (0.29, 29),
        (0.999, 99),
        ("0.45", 45),
        ("45%", 45),
        (1.5, 100),
        (-0.2, 0),
    ],
)
def test_parse_feed_inner_progress_is_a_fraction(value, expected):
    payload = feed(inner={"status": "RUNNING", "progress": value})

    assert parse_feed(payload).progress == expected


def test_parse_feed_wrapper_progress_preferred_over_inner():
    payload = feed(status="IN_PROGRESS", progress="30%", inner={"progress": 0.9})

    assert parse_feed(payload).progress == 30


def test_parse_feed_garbage_wrapper_progress_falls_back_to_inner():
    payload = feed(status="IN_PROGRESS", progress="abc", inner={"progress": 0.6})

    assert parse_feed(payload).progress == 60


def test_parse_feed_succeeded_progress_is_100():
    assert parse_feed(feed(status="SUCCESS", progress="80%")).progress == 100


def test_parse_feed_failed_keeps_progress():
    assert parse_feed(feed(status="FAILURE", progress="80%")).progress == 80


def test_parse_feed_missing_progress_is_none():
    assert parse_feed(feed(status="QUEUED")).progress is None


# --- timestamps -----------------------------------------------------------------------------


def test_parse_feed_submit_time_int():
    assert parse_feed(feed(status="QUEUED", submit_time=1773366766)).submitted_at == utc(
        2026, 3, 13, 1, 52, 46
    )


def test_parse_feed_start_time_float():
    snapshot = parse_feed(feed(status="IN_PROGRESS", start_time=1773366800.5))

    assert snapshot.started_at == dt.datetime(2026, 3, 13, 1, 53, 20, 500000, tzinfo=dt.UTC)


def test_parse_feed_finish_time_digit_string():
    snapshot = parse_feed(feed(status="SUCCESS", finish_time="1773367000"))

    assert snapshot.finished_at == utc(2026, 3, 13, 1, 56, 40)


def test_parse_feed_timestamps_are_utc():
    snapshot = parse_feed(feed(status="QUEUED", submit_time=1773366766))

    assert snapshot.submitted_at is not None
    assert snapshot.submitted_at.tzinfo is dt.UTC


def test_parse_feed_last_representable_second_accepted():
    snapshot = parse_feed(feed(status="QUEUED", submit_time=253402300799))

    assert snapshot.submitted_at == utc(9999, 12, 31, 23, 59, 59)


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        "0",
        "",
        None,
        -5,
        "-5",
        True,
        "abc",
        "1.7e9",
        "1_773_366_766",
        253402300800,
        pytest.param(HUGE, id="huge"),
        1e300,
        math.nan,
        math.inf,
        [1773366766],
    ],
)
def test_parse_feed_unusable_timestamp_is_none(value):
    assert parse_feed(feed(status="QUEUED", start_time=value)).started_at is None


def test_parse_feed_submitted_at_falls_back_to_inner_created_at():
    payload = feed(
        status="QUEUED",
        submit_time=0,
        inner={"status": "PENDING", "createdAt": "2026-03-13T09:52:46+08:00"},
    )

    assert parse_feed(payload).submitted_at == utc(2026, 3, 13, 1, 52, 46)


def test_parse_feed_created_at_with_trailing_z():
    payload = feed(status="QUEUED", inner={"createdAt": "2026-05-01T12:47:47.351Z"})

    assert parse_feed(payload).submitted_at == dt.datetime(
        2026, 5, 1, 12, 47, 47, 351000, tzinfo=dt.UTC
    )


def test_parse_feed_created_at_without_offset_is_utc():
    payload = feed(status="QUEUED", inner={"createdAt": "2026-05-01T12:47:47"})

    assert parse_feed(payload).submitted_at == utc(2026, 5, 1, 12, 47, 47)


@pytest.mark.parametrize(
    "value", ["yesterday", "", "Z", "0001-01-01T00:00:00+01:00", "\ud800", 1773366766, None]
)
def test_parse_feed_unusable_created_at_is_none(value):
    payload = feed(status="QUEUED", inner={"createdAt": value})

    assert parse_feed(payload).submitted_at is None


def test_parse_feed_submit_time_preferred_over_created_at():
    payload = feed(
        status="QUEUED",
        submit_time=1773366766,
        inner={"createdAt": "2020-01-01T00:00:00Z"},
    )

    assert parse_feed(payload).submitted_at == utc(2026, 3, 13, 1, 52, 46)


def test_parse_feed_legacy_create_time_is_submitted_at():
    payload = {"task_id": TASK_ID, "status": "0", "create_time": "1728622596"}

    assert parse_feed(payload).submitted_at == utc(2024, 10, 11, 4, 56, 36)


def test_parse_feed_legacy_update_time_ignored_when_unfinished():
    payload = {"task_id": TASK_ID, "status": "1", "update_time": "1728622955"}

    assert parse_feed(payload).finished_at is None


def test_parse_feed_finish_time_preferred_over_update_time():
    payload = {
        "task_id": TASK_ID,
        "status": "3",
        "finish_time": 1728622900,
        "update_time": "1728622955",
    }

    assert parse_feed(payload).finished_at == utc(2024, 10, 11, 5, 1, 40)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 400, "message": "task_not_exist", "data": None},
        {"code": "TASK_NOT_EXIST"},
        {"msg": "task_not_exist"},
        {"error": {"message": "task_not_exist", "code": ""}},
        {"error": {"message": "", "code": "task_not_exist"}},
    ],
)
def test_parse_feed_task_not_exist_variants_raise_not_visible(payload):
    with pytest.raises(TaskNotVisibleError) as excinfo:
        parse_feed(payload)

    assert str(excinfo.value) == NOT_VISIBLE_MESSAGE


def test_task_not_visible_error_is_a_lookup_error():
    with pytest.raises(LookupError):
        parse_feed(load_fixture("feed-task-not-exist"))


def test_parse_feed_error_envelope_message_truncated():
    payload = {"error": {"message": "m" * 1000, "code": ""}}

    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed(payload)

    assert str(excinfo.value) == "feed request failed: " + "m" * 300


def test_parse_feed_error_envelope_without_message():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"error": {"message": None, "code": 5}})

    assert str(excinfo.value) == "feed request failed: CometAPI gave no error message"


def test_parse_feed_error_envelope_as_string():
    with pytest.raises(InvalidResponseError) as excinfo:
        parse_feed({"error": "bad gateway"})

    assert str(excinfo.value) == "feed request failed: bad gateway"


def test_parse_feed_null_error_is_not_an_envelope():
    assert parse_feed({"error": None, "task_id": TASK_ID, "status": "1"}).status == Status.RUNNING


def test_invalid_response_error_is_a_value_error():
    with pytest.raises(ValueError, match="feed request failed: model name is required"):
        parse_feed(load_fixture("error-envelope"))


# --- hostile values -------------------------------------------------------------------------


def test_parse_feed_deeply_nested_values_do_not_recurse():
    nested: Any = VIDEO
    for _ in range(100_000):
        nested = [nested]
    payload = feed(status="SUCCESS", result_url=nested, inner={"output": nested, "status": nested})

    assert parse_feed(payload).outputs == ()


def test_parse_feed_lone_surrogates_tolerated():
    payload = feed(status="\ud800", action="\udfff", inner={"status": "RUNNING"})

    assert parse_feed(payload).status == Status.RUNNING


def test_parse_feed_huge_ints_everywhere_tolerated():
    payload = feed(
        status=HUGE,
        progress=HUGE,
        submit_time=HUGE,
        result_url=HUGE,
        inner={"status": HUGE, "progress": HUGE, "id": HUGE, "output": [HUGE]},
    )

    snapshot = parse_feed(payload)

    assert (snapshot.status, snapshot.progress, snapshot.submitted_at, snapshot.outputs) == (
        None,
        100,
        None,
        (),
    )


# --- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-HUGE, max_value=HUGE)
    | st.floats()
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
interesting_leaves = st.sampled_from(
    [
        *EXPECTED_WRAPPER_STATUSES,
        *EXPECTED_INNER_STATUSES,
        0,
        1,
        2,
        3,
        "45%",
        "250%",
        "-3%",
        0.45,
        1773366766,
        "1773366766",
        "2026-03-13T09:52:46+08:00",
        TASK_ID,
        "task_not_exist",
        "success",
        200,
    ]
)
# Strings that start like URLs, so the URL filter sees near misses as well as hits.
url_like = st.builds(
    str.__add__,
    st.sampled_from(
        ["https://cdn.example.com/", "http://", "HTTPS://a.b", "javascript:", "https://[", "//"]
    ),
    st.from_regex(r"[a-z0-9/._-]{0,12}", fullmatch=True) | st.text(max_size=12),
)
leaves = interesting_leaves | url_like | json_values
url_leaves = url_like | leaves
statuses = st.sampled_from([*EXPECTED_WRAPPER_STATUSES, *EXPECTED_INNER_STATUSES]) | leaves
inner_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": leaves,
        "status": statuses,
        "progress": leaves,
        "failure": leaves,
        "failureCode": leaves,
        "createdAt": leaves,
        "output": st.lists(url_leaves, max_size=3) | url_leaves,
        "video_url": url_leaves,
        "poster": url_leaves,
        "last_frame": url_leaves,
    },
)
records = st.fixed_dictionaries(
    {"task_id": st.just(TASK_ID) | leaves, "status": statuses},
    optional={
        "action": leaves,
        "fail_reason": url_leaves,
        "result_url": url_leaves,
        "submit_time": leaves,
        "start_time": leaves,
        "finish_time": leaves,
        "progress": leaves,
        "video_url": url_leaves,
        "poster": url_leaves,
        "last_frame": url_leaves,
        "msg": leaves,
        "create_time": leaves,
        "update_time": leaves,
        "data": inner_objects | leaves,
    },
)
wrapped_records = st.fixed_dictionaries(
    {"code": st.sampled_from(["success", 200, "200"]), "data": records},
    optional={"message": leaves, "task_id": leaves},
)
loosely_wrapped_records = st.fixed_dictionaries(
    {"data": records | leaves},
    optional={"code": leaves, "message": leaves, "task_id": leaves},
)
error_envelopes = st.fixed_dictionaries(
    {"error": st.fixed_dictionaries({}, optional={"message": leaves, "code": leaves}) | leaves}
)
payloads = json_values | records | wrapped_records | loosely_wrapped_records | error_envelopes
property_settings = settings(max_examples=300, deadline=None, database=None)


def parse_or_none(payload: Any) -> FeedSnapshot | None:
    """The snapshot, or None when parse_feed refused the payload with one of our errors."""
    try:
        return parse_feed(payload)
    except RunwayFeedError:
        return None


@property_settings
@given(payloads)
def test_parse_feed_any_json_returns_snapshot_or_feed_error(payload):
    result = parse_or_none(payload)

    assert result is None or isinstance(result, FeedSnapshot)


@property_settings
@given(payloads)
def test_parse_feed_any_json_progress_is_a_percent(payload):
    snapshot = parse_or_none(payload)

    assert snapshot is None or snapshot.progress is None or 0 <= snapshot.progress <= 100


@property_settings
@given(payloads)
def test_parse_feed_any_json_outputs_are_absolute_http_urls(payload):
    snapshot = parse_or_none(payload)

    outputs = () if snapshot is None else snapshot.outputs
    assert all(
        urlsplit(output.url).scheme.lower() in {"http", "https"} and urlsplit(output.url).hostname
        for output in outputs
    )
