"""The shipped fake CometAPI server, exercised over real HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from django_runway_feed.testing import FakeClock, FakeCometAPI, Fault, TaskScript, pytest_plugin

# The plugin is registered through an entry point once the package is installed; binding its
# fixtures here keeps these tests independent of how the package was installed.
fake_cometapi = pytest_plugin.fake_cometapi
fake_cometapi_clock = pytest_plugin.fake_cometapi_clock
fake_cometapi_clocked = pytest_plugin.fake_cometapi_clocked

START = 1_773_366_766.0  # 2026-03-13T01:52:46Z, the documented example's submit_time
KEY = "test-key"
CALLBACK = "https://example.invalid/callback/abc"
REQUEST_ID = r"\(request id: \d+\)"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def api(clock: FakeClock) -> Iterator[FakeCometAPI]:
    with FakeCometAPI(api_key=KEY, clock=clock) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"})
        yield session


def create(
    http: requests.Session, api: FakeCometAPI, route: str = "generate", **body: Any
) -> requests.Response:
    payload = {"prompt": "a cat surfing", "callback_url": CALLBACK, **body}
    return http.post(f"{api.url}/runway/pro/{route}", json=payload, timeout=5)


def create_task(http: requests.Session, api: FakeCometAPI, **body: Any) -> str:
    task_id: str = create(http, api, **body).json()["data"]["task_id"]
    return task_id


def feed(
    http: requests.Session, api: FakeCometAPI, task_id: str, **kwargs: Any
) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    return http.post(f"{api.url}/runway/feed", json={"task_id": task_id}, **kwargs)


def feed_data(http: requests.Session, api: FakeCometAPI, task_id: str) -> dict[str, Any]:
    response = feed(http, api, task_id)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()["data"]
    return data


def wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# FakeClock ---------------------------------------------------------------------------------


def test_clock_stands_still_until_advanced() -> None:
    clock = FakeClock(100.0)

    clock.advance(2.5)

    assert clock.now() == 102.5


def test_clock_set_jumps_back() -> None:
    clock = FakeClock(100.0)

    clock.set(50.0)

    assert clock.now() == 50.0


def test_clock_advance_negative_is_refused() -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        FakeClock(100.0).advance(-1)


def test_clock_defaults_to_real_time() -> None:
    assert abs(FakeClock().now() - time.time()) < 5


def test_server_now_is_real_time_without_clock() -> None:
    assert abs(FakeCometAPI().now() - time.time()) < 5


# Scripts and faults are validated ----------------------------------------------------------


def test_task_script_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        TaskScript(outcome="exploded")


def test_task_script_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="run_for"):
        TaskScript(run_for=-1)


def test_fault_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Fault\.kind"):
        Fault("teapot")


def test_inject_task_id_on_create_route_is_refused(api: FakeCometAPI) -> None:
    with pytest.raises(ValueError, match="task_id"):
        api.inject(Fault.server_error(), task_id="abc", route="create")


# Create routes ---------------------------------------------------------------------------------


def test_create_success_body_is_documented(api: FakeCometAPI, http: requests.Session) -> None:
    response = create(http, api)

    body = response.json()
    task_id = body["data"]["task_id"]
    assert response.status_code == 200
    assert body == {"code": 200, "message": "", "msg": "success", "data": {"task_id": task_id}}
    assert uuid.UUID(task_id).version == 4


def test_create_success_older_style_has_exec_time(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, create_style="older") as api:
        body = create(http, api).json()

    assert body == {
        "code": 200,
        "msg": "success",
        "data": {"task_id": body["data"]["task_id"]},
        "exec_time": 0.42,
    }


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("generate", {"prompt": "a cat"}),
        ("generate", {"prompt": "", "image": "https://example.com/cat.png"}),
        ("video2video", {"video": "https://example.com/in.mp4", "prompt": "pixel art"}),
        ("act_one", {"video": "https://example.com/in.mp4", "image": "https://example.com/a.png"}),
    ],
)
def test_create_each_route_with_required_fields_creates_task(
    api: FakeCometAPI, http: requests.Session, route: str, body: dict[str, Any]
) -> None:
    response = http.post(
        f"{api.url}/runway/pro/{route}", json={**body, "callback_url": CALLBACK}, timeout=5
    )

    assert response.json()["code"] == 200
    assert api.task_ids() == [response.json()["data"]["task_id"]]


def test_create_without_callback_url_is_refused_legacy_style(
    api: FakeCometAPI, http: requests.Session
) -> None:
    response = http.post(f"{api.url}/runway/pro/generate", json={"prompt": "a cat"}, timeout=5)

    assert response.status_code == 200
    assert response.json() == {"code": 400, "msg": "callback_url_empty", "data": None}
    assert api.task_ids() == []


def test_create_with_empty_callback_url_is_refused(
    api: FakeCometAPI, http: requests.Session
) -> None:
    response = create(http, api, callback_url="")

    assert response.json()["msg"] == "callback_url_empty"


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("generate", {"model": "gen4"}, "prompt"),
        ("video2video", {"prompt": "pixel art"}, "video"),
        ("act_one", {"image": "https://example.com/a.png"}, "video"),
        ("act_one", {"video": "https://example.com/in.mp4"}, "image"),
    ],
)
def test_create_missing_field_is_400_envelope(
    api: FakeCometAPI, http: requests.Session, route: str, body: dict[str, Any], field: str
) -> None:
    response = http.post(
        f"{api.url}/runway/pro/{route}", json={**body, "callback_url": CALLBACK}, timeout=5
    )

    error = response.json()["error"]
    assert response.status_code == 400
    assert re.fullmatch(rf"{field} is required {REQUEST_ID}", error["message"])
    assert {k: v for k, v in error.items() if k != "message"} == {
        "type": "comet_api_error",
        "param": "",
        "code": "invalid_request",
    }


def test_create_body_not_json_is_400_envelope(api: FakeCometAPI, http: requests.Session) -> None:
    response = http.post(f"{api.url}/runway/pro/generate", data=b"prompt=cat", timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_create_without_key_is_401(api: FakeCometAPI) -> None:
    response = requests.post(
        f"{api.url}/runway/pro/generate", json={"prompt": "a", "callback_url": CALLBACK}, timeout=5
    )

    error = response.json()["error"]
    assert response.status_code == 401
    assert re.fullmatch(rf"Invalid token {REQUEST_ID}", error["message"])
    assert (error["type"], error["code"]) == ("comet_api_error", "")
    assert api.task_ids() == []


def test_create_with_wrong_key_is_401_without_echoing_it(api: FakeCometAPI) -> None:
    response = requests.post(
        f"{api.url}/runway/pro/generate",
        json={"prompt": "a", "callback_url": CALLBACK},
        headers={"Authorization": "Bearer sk-wrong-secret"},
        timeout=5,
    )

    assert response.status_code == 401
    assert "sk-wrong-secret" not in response.text


def test_feed_without_key_is_401(api: FakeCometAPI) -> None:
    task_id = api.add_task()

    response = requests.post(f"{api.url}/runway/feed", json={"task_id": task_id}, timeout=5)

    assert response.status_code == 401


def test_no_api_key_means_no_auth(http: requests.Session) -> None:
    with FakeCometAPI(api_key=None) as api:
        response = requests.post(
            f"{api.url}/runway/pro/generate",
            json={"prompt": "a", "callback_url": CALLBACK},
            timeout=5,
        )

    assert response.json()["code"] == 200


def test_create_request_is_recorded_without_the_key(
    api: FakeCometAPI, http: requests.Session
) -> None:
    task_id = create_task(http, api, model="gen4")

    [recorded] = api.create_requests
    assert recorded.route == "generate"
    assert recorded.body == {"prompt": "a cat surfing", "callback_url": CALLBACK, "model": "gen4"}
    assert recorded.authorized is True
    assert recorded.task_id == task_id
    assert recorded.status_code == 200
    assert recorded.at == START
    assert recorded.headers["X-Runway-Version"] == "2024-11-06"
    assert recorded.headers["Content-Type"] == "application/json"
    assert KEY not in repr(recorded)


def test_get_on_api_route_is_405(api: FakeCometAPI, http: requests.Session) -> None:
    response = http.get(f"{api.url}/runway/feed", timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_unknown_path_is_404_html(api: FakeCometAPI, http: requests.Session) -> None:
    response = http.post(f"{api.url}/runway/pro/nothing", json={}, timeout=5)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/html"
    assert response.text.startswith("<html>")


# Feed: phases ----------------------------------------------------------------------------------


def test_feed_unknown_task_is_task_not_exist_400(api: FakeCometAPI, http: requests.Session) -> None:
    response = feed(http, api, str(uuid.uuid4()))

    assert response.status_code == 400
    assert response.json() == {"code": "task_not_exist", "message": "task_not_exist", "data": None}


def test_feed_task_not_exist_status_200_when_configured(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, task_not_exist_status=200) as api:
        response = feed(http, api, "nope")

    assert response.status_code == 200
    assert response.json()["code"] == "task_not_exist"


def test_feed_without_task_id_is_400_envelope(api: FakeCometAPI, http: requests.Session) -> None:
    response = http.post(f"{api.url}/runway/feed", json={}, timeout=5)

    assert response.status_code == 400
    assert re.fullmatch(rf"task_id is required {REQUEST_ID}", response.json()["error"]["message"])


def test_feed_invisible_task_is_task_not_exist(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    api.script_next(TaskScript(invisible_for=5))
    task_id = create_task(http, api)
    clock.advance(4.9)

    response = feed(http, api, task_id)

    assert response.status_code == 400
    assert response.json()["code"] == "task_not_exist"


def test_feed_invisible_task_becomes_visible(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    api.script_next(TaskScript(invisible_for=5))
    task_id = create_task(http, api)
    clock.advance(5)

    assert feed_data(http, api, task_id)["status"] == "QUEUED"


def test_feed_queued_task_matches_documented_example(
    api: FakeCometAPI, http: requests.Session
) -> None:
    task_id = create_task(http, api)

    response = feed(http, api, task_id)

    assert response.status_code == 200
    assert response.json() == {
        "code": "success",
        "message": "",
        "data": {
            "task_id": task_id,
            "action": "IMAGE_TO_VIDEO",
            "status": "QUEUED",
            "fail_reason": "",
            "submit_time": 1773366766,
            "start_time": 0,
            "finish_time": 0,
            "progress": "0%",
            "data": {"id": task_id, "status": "PENDING", "createdAt": "2026-03-13T01:52:46.000Z"},
        },
    }


@pytest.mark.parametrize("status", ["NOT_START", "SUBMITTED", "UNKNOWN"])
def test_feed_queued_wrapper_status_is_scriptable(
    api: FakeCometAPI, http: requests.Session, status: str
) -> None:
    task_id = api.add_task(TaskScript(queued_wrapper_status=status))

    assert feed_data(http, api, task_id)["status"] == status


def test_feed_throttled_task_is_queued_with_inner_throttled(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(queued_for=2, throttled_for=30))
    clock.advance(10)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["data"]["status"], data["progress"]) == (
        "QUEUED",
        "THROTTLED",
        "0%",
    )
    assert data["start_time"] == 0


def test_feed_running_task_reports_start_and_progress(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(queued_for=2, run_for=10))
    clock.advance(2 + 2.5)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["data"]["status"]) == ("IN_PROGRESS", "RUNNING")
    assert (data["progress"], data["data"]["progress"]) == ("25%", 0.25)
    assert (data["start_time"], data["finish_time"]) == (int(START) + 2, 0)


def test_feed_running_progress_rises_with_the_clock(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(queued_for=0, run_for=100))
    seen = []
    for elapsed in (10, 35, 99.9, 100):
        clock.set(START + elapsed)
        seen.append(feed_data(http, api, task_id)["progress"])

    assert seen == ["10%", "35%", "99%", "100%"]


def test_feed_never_task_stays_running_below_100(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(outcome="never", queued_for=0, run_for=10))
    clock.advance(86_400)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["progress"], data["finish_time"]) == ("IN_PROGRESS", "99%", 0)


def test_feed_succeeded_task_has_result_url(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(queued_for=2, run_for=10))
    clock.advance(12)

    data = feed_data(http, api, task_id)

    assert data == {
        "task_id": task_id,
        "action": "IMAGE_TO_VIDEO",
        "status": "SUCCESS",
        "fail_reason": "",
        "result_url": f"{api.url}/outputs/{task_id}.mp4",
        "submit_time": int(START),
        "start_time": int(START) + 2,
        "finish_time": int(START) + 12,
        "progress": "100%",
        "data": {"id": task_id, "status": "SUCCEEDED", "createdAt": "2026-03-13T01:52:46.000Z"},
    }


def _result_url(data: dict[str, Any]) -> Any:
    return data.get("result_url")


def _inner_output(data: dict[str, Any]) -> Any:
    return data["data"].get("output", [None])[0]


def _inner_video_url(data: dict[str, Any]) -> Any:
    return data["data"].get("video_url")


def _video_url(data: dict[str, Any]) -> Any:
    return data.get("video_url")


def _fail_reason(data: dict[str, Any]) -> Any:
    return data["fail_reason"] or None


LOCATIONS = {
    "result_url": _result_url,
    "inner_output": _inner_output,
    "legacy_video_url": _inner_video_url,
    "video_url": _video_url,
    "fail_reason": _fail_reason,
}


@pytest.mark.parametrize("location", list(LOCATIONS))
def test_feed_succeeded_output_only_at_scripted_location(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock, location: str
) -> None:
    task_id = api.add_task(TaskScript(output_location=location))
    clock.advance(60)

    data = feed_data(http, api, task_id)

    found = {name: read(data) for name, read in LOCATIONS.items()}
    expected: dict[str, str | None] = dict.fromkeys(LOCATIONS)
    expected[location] = f"{api.url}/outputs/{task_id}.mp4"
    assert found == expected


def test_feed_legacy_video_url_location_adds_poster_and_last_frame(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(output_location="legacy_video_url"))
    clock.advance(60)

    inner = feed_data(http, api, task_id)["data"]

    assert inner["poster"] == f"{api.url}/outputs/{task_id}-poster.png"
    assert inner["last_frame"] == f"{api.url}/outputs/{task_id}-last.png"


def test_feed_failed_task_has_failure_code(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(
        TaskScript(outcome="failed", failure_code="INTERNAL.BAD_OUTPUT.CODE01", failure="Bad.")
    )
    clock.advance(60)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["fail_reason"], data["progress"]) == ("FAILURE", "Bad.", "100%")
    assert data["data"]["status"] == "FAILED"
    assert data["data"]["failureCode"] == "INTERNAL.BAD_OUTPUT.CODE01"
    assert data["data"]["failure"] == "Bad."
    assert "result_url" not in data


def test_feed_cancelled_task_is_failure_with_inner_cancelled(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(outcome="cancelled"))
    clock.advance(60)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["data"]["status"]) == ("FAILURE", "CANCELLED")
    assert data["finish_time"] == int(START) + 12


def test_feed_action_is_copied_raw(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task(action="SOMETHING_NEW")

    assert feed_data(http, api, task_id)["action"] == "SOMETHING_NEW"


def test_feed_infinite_queue_never_starts(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(queued_for=float("inf")))
    clock.advance(10**9)

    assert feed_data(http, api, task_id)["status"] == "QUEUED"


def test_feed_output_delay_gives_success_without_url_first(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(output_delay=8))
    clock.advance(12)
    early = feed_data(http, api, task_id)
    clock.advance(8)
    late = feed_data(http, api, task_id)

    assert (early["status"], "result_url" in early) == ("SUCCESS", False)
    assert late["result_url"] == f"{api.url}/outputs/{task_id}.mp4"


def test_feed_wrapper_lag_shows_inner_ahead(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(wrapper_lag=5, output_location="inner_output"))
    clock.advance(13)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["data"]["status"]) == ("IN_PROGRESS", "SUCCEEDED")
    assert data["data"]["output"] == [f"{api.url}/outputs/{task_id}.mp4"]


# Feed: shapes and progress styles ------------------------------------------------------------


def test_feed_bare_shape_is_inner_object_alone(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task(TaskScript(shape="bare"))

    body = feed(http, api, task_id).json()

    assert body["task_id"] == task_id
    assert body["status"] == "QUEUED"
    assert "code" not in body


def test_feed_legacy_shape_succeeded_has_digit_status_and_urls(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(shape="legacy"), prompt="a cat")
    clock.advance(60)

    data = feed_data(http, api, task_id)

    record = data["data"]
    assert (data["status"], record["status"]) == ("3", "3")
    assert record["video_url"] == f"{api.url}/outputs/{task_id}.mp4"
    assert record["poster"] == f"{api.url}/outputs/{task_id}-poster.png"
    assert record["last_frame"] == f"{api.url}/outputs/{task_id}-last.png"
    assert (record["msg"], record["prompt"], record["create_time"]) == (
        None,
        "a cat",
        str(int(START)),
    )


def test_feed_legacy_shape_failed_has_reason_in_msg(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(shape="legacy", outcome="failed", failure="Moderated."))
    clock.advance(60)

    data = feed_data(http, api, task_id)

    assert (data["status"], data["fail_reason"]) == ("2", "")
    assert (data["data"]["status"], data["data"]["msg"], data["data"]["video_url"]) == (
        "2",
        "Moderated.",
        None,
    )


@pytest.mark.parametrize(("elapsed", "digit"), [(0, "0"), (5, "1")])
def test_feed_legacy_shape_unfinished_digits(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock, elapsed: float, digit: str
) -> None:
    task_id = api.add_task(TaskScript(shape="legacy"))
    clock.advance(elapsed)

    assert feed_data(http, api, task_id)["status"] == digit


def test_feed_coarse_progress_only_takes_three_values(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task(TaskScript(progress_style="coarse", queued_for=2, run_for=10))
    seen = []
    for elapsed in (0, 1, 2, 5, 11.9, 12, 30):
        clock.set(START + elapsed)
        seen.append(feed_data(http, api, task_id)["progress"])

    assert seen == ["0%", "0%", "30%", "30%", "30%", "100%", "100%"]


def test_feed_state_moves_every_task_with_the_clock(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    first = api.add_task(TaskScript(run_for=10))
    clock.advance(5)
    second = api.add_task(TaskScript(run_for=10))
    clock.advance(7)

    assert [api.task_phase(first), api.task_phase(second)] == ["succeeded", "running"]
    assert feed_data(http, api, first)["status"] == "SUCCESS"
    assert feed_data(http, api, second)["status"] == "IN_PROGRESS"


def test_task_state_is_the_feed_body(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()

    assert api.task_state(task_id) == feed(http, api, task_id).json()


def test_task_state_unknown_id_raises(api: FakeCometAPI) -> None:
    with pytest.raises(KeyError):
        api.task_state("nope")


# Scripting -----------------------------------------------------------------------------------


def test_script_next_applies_in_order_then_default(
    api: FakeCometAPI, http: requests.Session
) -> None:
    api.script_next(TaskScript(action="A"), TaskScript(action="B"))

    actions = [feed_data(http, api, create_task(http, api))["action"] for _ in range(3)]

    assert actions == ["A", "B", "IMAGE_TO_VIDEO"]


def test_script_prompt_matches_substring(api: FakeCometAPI, http: requests.Session) -> None:
    api.script_prompt("forbidden", TaskScript(outcome="failed", action="MATCHED"))

    matched = create_task(http, api, prompt="a forbidden dance")
    other = create_task(http, api, prompt="a cat")

    assert feed_data(http, api, matched)["action"] == "MATCHED"
    assert feed_data(http, api, other)["action"] == "IMAGE_TO_VIDEO"


def test_script_next_wins_over_script_prompt(api: FakeCometAPI, http: requests.Session) -> None:
    api.script_prompt("cat", TaskScript(action="PROMPT"))
    api.script_next(TaskScript(action="NEXT"))

    assert feed_data(http, api, create_task(http, api))["action"] == "NEXT"


def test_default_script_applies_to_created_tasks(http: requests.Session, clock: FakeClock) -> None:
    with FakeCometAPI(api_key=KEY, clock=clock, default_script=TaskScript(shape="bare")) as api:
        body = feed(http, api, create_task(http, api)).json()

    assert "code" not in body


def test_add_task_with_given_id_and_backdated(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task(task_id="given-id", created_at=START - 3600)

    data = feed_data(http, api, task_id)

    assert (task_id, data["status"], data["submit_time"]) == (
        "given-id",
        "SUCCESS",
        int(START) - 3600,
    )


def test_reset_forgets_tasks_and_calls(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = create_task(http, api)
    feed(http, api, task_id)

    api.reset()

    assert (api.task_ids(), api.call_count(), api.create_requests) == ([], 0, [])
    assert feed(http, api, task_id).status_code == 400


# Faults --------------------------------------------------------------------------------------


def test_fault_rate_limited_has_retry_after(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    api.inject(Fault.rate_limited("7"))

    response = feed(http, api, task_id)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error"]["type"] == "comet_api_error"


def test_fault_rate_limited_without_retry_after(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.rate_limited())

    response = feed(http, api, api.add_task())

    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_fault_server_error_500_is_json_envelope(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error())

    response = feed(http, api, api.add_task())

    assert response.status_code == 500
    assert re.fullmatch(rf"internal server error {REQUEST_ID}", response.json()["error"]["message"])


def test_fault_server_error_502_is_html(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error(502))

    response = feed(http, api, api.add_task())

    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert "502 Bad Gateway" in response.text


def test_fault_unauthorized_is_401_envelope(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.unauthorized())

    response = feed(http, api, api.add_task())

    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("Invalid token (request id: ")


def test_fault_quota_is_403_insufficient_user_quota(
    api: FakeCometAPI, http: requests.Session
) -> None:
    api.inject(Fault.quota(), route="create")

    response = create(http, api)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_user_quota"


def test_fault_html_body_is_200_html(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.html())

    response = feed(http, api, api.add_task())

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html"
    assert response.text.startswith("<!DOCTYPE html>")


def test_fault_malformed_json_does_not_parse(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.malformed_json())

    response = feed(http, api, api.add_task())

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_fault_custom_status_body_and_headers(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault("status", status=418, body='{"x": 1}', headers={"X-Extra": "yes"}))

    response = feed(http, api, api.add_task())

    assert (response.status_code, response.json(), response.headers["X-Extra"]) == (
        418,
        {"x": 1},
        "yes",
    )


def test_fault_redirect_is_not_followed(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.redirect())

    response = feed(http, api, api.add_task(), allow_redirects=False)

    assert response.status_code == 301
    assert response.headers["Location"] == "https://example.invalid/elsewhere"


def test_fault_reset_breaks_the_response(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.reset())

    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        feed(http, api, api.add_task())


def test_fault_reset_leaves_server_usable(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    api.inject(Fault.reset())
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        feed(http, api, task_id)

    assert feed(http, api, task_id).status_code == 200


def test_fault_huge_is_chunked_without_content_length(
    api: FakeCometAPI, http: requests.Session
) -> None:
    api.inject(Fault.huge(300_000))

    with feed(http, api, api.add_task(), stream=True) as response:
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        body = response.raw.read()

    assert len(body) == 300_000
    assert body.startswith(b'{"code": "success"')


def test_fault_slow_delays_the_answer(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    api.inject(Fault.slow(0.3))

    started = time.monotonic()
    response = feed(http, api, task_id)

    assert time.monotonic() - started >= 0.3
    assert response.json()["data"]["task_id"] == task_id


def test_fault_slow_create_still_creates_the_task_after_client_timeout(
    api: FakeCometAPI, http: requests.Session
) -> None:
    api.inject(Fault.slow(0.5), route="create")

    with pytest.raises(requests.ReadTimeout):
        http.post(
            f"{api.url}/runway/pro/generate",
            json={"prompt": "a cat", "callback_url": CALLBACK},
            timeout=(5, 0.1),
        )

    wait_for(lambda: len(api.task_ids()) == 1)


def test_fault_task_not_exist_for_an_existing_task(
    api: FakeCometAPI, http: requests.Session
) -> None:
    api.inject(Fault.task_not_exist())

    response = feed(http, api, api.add_task())

    assert (response.status_code, response.json()["code"]) == (400, "task_not_exist")


def test_fault_fires_only_given_times(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    api.inject(Fault.server_error(), times=2)

    statuses = [feed(http, api, task_id).status_code for _ in range(3)]

    assert statuses == [500, 500, 200]


def test_fault_for_task_id_spares_other_tasks(api: FakeCometAPI, http: requests.Session) -> None:
    target, other = api.add_task(), api.add_task()
    api.inject(Fault.server_error(), task_id=target)

    assert feed(http, api, other).status_code == 200
    assert feed(http, api, target).status_code == 500


def test_fault_on_feed_route_spares_creates(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error())

    assert create(http, api).status_code == 200
    assert feed(http, api, api.add_task()).status_code == 500


def test_fault_on_create_route_creates_no_task(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error(503), route="create")

    response = create(http, api)

    assert response.status_code == 503
    assert api.task_ids() == []
    assert api.create_requests[0].status_code == 503


def test_fault_on_any_route_hits_first_request(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error(), route="any")

    assert create(http, api).status_code == 500


def test_clear_faults_drops_pending_faults(api: FakeCometAPI, http: requests.Session) -> None:
    api.inject(Fault.server_error(), times=5)

    api.clear_faults()

    assert feed(http, api, api.add_task()).status_code == 200


def _is_feed_answer(response: requests.Response) -> bool:
    try:
        return response.status_code == 200 and "task_id" in response.json()["data"]
    except ValueError:
        return False


def test_fault_rate_faults_a_fraction_of_feed_requests(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, fault_rate=0.5, seed=3) as api:
        task_id = api.add_task()
        responses = [feed(http, api, task_id) for _ in range(60)]

    answered = sum(_is_feed_answer(r) for r in responses)
    assert 10 < answered < 50
    assert {r.status_code for r in responses} <= {200, 429, 500, 502, 503}
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 429)


def test_fault_rate_one_faults_every_feed_request(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, fault_rate=1.0) as api:
        task_id = api.add_task()
        responses = [feed(http, api, task_id) for _ in range(20)]

    assert not any(_is_feed_answer(r) for r in responses)


def test_fault_rate_spares_creates(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, fault_rate=1.0) as api:
        assert create(http, api).json()["code"] == 200


def test_fault_rate_is_reproducible_with_a_seed(http: requests.Session) -> None:
    runs = []
    for _ in range(2):
        with FakeCometAPI(api_key=KEY, fault_rate=0.3, seed=7) as api:
            task_id = api.add_task()
            runs.append([feed(http, api, task_id).status_code for _ in range(30)])

    assert runs[0] == runs[1]


# Call counting -------------------------------------------------------------------------------


def test_call_count_is_per_task(api: FakeCometAPI, http: requests.Session) -> None:
    first, second = api.add_task(), api.add_task()
    for _ in range(3):
        feed(http, api, first)
    feed(http, api, second)

    assert (api.call_count(), api.call_count(first), api.call_count(second)) == (4, 3, 1)


def test_feed_calls_record_clock_time_and_status_of_faults(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = api.add_task()
    api.inject(Fault.rate_limited("3"))
    feed(http, api, task_id)
    clock.advance(5)
    feed(http, api, task_id)

    assert [(c.at, c.status_code) for c in api.feed_calls(task_id)] == [
        (START, 429),
        (START + 5, 200),
    ]


def test_feed_calls_record_reset_faults(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    api.inject(Fault.reset())
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        feed(http, api, task_id)

    assert api.call_count(task_id) == 1


# Outputs -------------------------------------------------------------------------------------


def test_output_video_is_served_as_mp4(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()

    response = http.get(f"{api.url}/outputs/{task_id}.mp4", timeout=5)

    assert response.headers["Content-Type"] == "video/mp4"
    assert response.content[4:8] == b"ftyp"
    assert 1024 < len(response.content) < 16 * 1024


@pytest.mark.parametrize("suffix", ["-poster.png", "-last.png"])
def test_output_images_are_served_as_png(
    api: FakeCometAPI, http: requests.Session, suffix: str
) -> None:
    task_id = api.add_task()

    response = http.get(f"{api.url}/outputs/{task_id}{suffix}", timeout=5)

    assert response.headers["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_output_bytes_are_deterministic(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    url = f"{api.url}/outputs/{task_id}.mp4"

    assert http.get(url, timeout=5).content == http.get(url, timeout=5).content


def test_output_head_then_get_on_one_connection(api: FakeCometAPI, http: requests.Session) -> None:
    url = f"{api.url}/outputs/{api.add_task()}.mp4"

    head = http.head(url, timeout=5)
    get = http.get(url, timeout=5)

    assert (head.content, int(head.headers["Content-Length"])) == (b"", len(get.content))


def test_output_of_unknown_task_is_404(api: FakeCometAPI, http: requests.Session) -> None:
    response = http.get(f"{api.url}/outputs/{uuid.uuid4()}.mp4", timeout=5)

    assert response.status_code == 404


# Concurrency, latency, life cycle ------------------------------------------------------------


def test_latency_delays_each_response(http: requests.Session) -> None:
    with FakeCometAPI(api_key=KEY, latency=0.2) as api:
        started = time.monotonic()
        feed(http, api, "nope")

    assert time.monotonic() - started >= 0.2


def test_latency_is_served_concurrently() -> None:
    barrier = threading.Barrier(8)

    def poll(api: FakeCometAPI) -> None:
        barrier.wait()
        requests.post(
            f"{api.url}/runway/feed",
            json={"task_id": "x"},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=5,
        )

    with FakeCometAPI(api_key=KEY, latency=0.2) as api:
        threads = [threading.Thread(target=poll, args=(api,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert api.max_concurrent_requests >= 4


def test_keep_alive_connection_is_reused(api: FakeCometAPI, http: requests.Session) -> None:
    task_id = api.add_task()
    for _ in range(5):
        feed(http, api, task_id)

    adapter = http.get_adapter(api.url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    pools = adapter.poolmanager.pools
    [pool] = [pools[key] for key in pools.keys()]  # noqa: SIM118 (the container has no values())
    assert (pool.num_connections, pool.num_requests) == (1, 5)


def test_stop_closes_pooled_connections(http: requests.Session) -> None:
    api = FakeCometAPI(api_key=KEY).start()
    url = api.url
    http.post(f"{url}/runway/feed", json={"task_id": "x"}, timeout=5)

    api.stop()

    with pytest.raises(requests.ConnectionError):
        http.post(f"{url}/runway/feed", json={"task_id": "x"}, timeout=5)


def test_serve_forever_returns_when_stopped_elsewhere() -> None:
    api = FakeCometAPI()
    runner = threading.Thread(target=api.serve_forever)
    runner.start()
    wait_for(lambda: api._server is not None)

    api.stop()
    runner.join(timeout=5)

    assert not runner.is_alive()


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = FakeCometAPI().url


def test_server_can_restart_after_stop(http: requests.Session) -> None:
    api = FakeCometAPI(api_key=KEY)
    with api:
        pass

    with api:
        assert feed(http, api, "nope").status_code == 400


# Callbacks -----------------------------------------------------------------------------------


class _CallbackReceiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def callback_url() -> Iterator[str]:
    _CallbackReceiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CallbackReceiver)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=abc"
    server.shutdown()
    server.server_close()


def test_deliver_callbacks_posts_legacy_record_once(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock, callback_url: str
) -> None:
    task_id = create_task(http, api, callback_url=callback_url)
    clock.advance(60)

    first = api.deliver_callbacks()
    second = api.deliver_callbacks()

    assert [(d.task_id, d.status_code) for d in first] == [(task_id, 204)]
    assert second == []
    [record] = _CallbackReceiver.received
    assert (record["task_id"], record["status"]) == (task_id, "3")
    assert record["video_url"] == f"{api.url}/outputs/{task_id}.mp4"


def test_deliver_callbacks_skips_unfinished_and_opted_out_tasks(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock, callback_url: str
) -> None:
    api.script_next(TaskScript(run_for=1000), TaskScript(callback=False))
    create_task(http, api, callback_url=callback_url)
    create_task(http, api, callback_url=callback_url)
    clock.advance(60)

    assert api.deliver_callbacks() == []


def test_callbacks_thread_delivers_by_itself(
    http: requests.Session, clock: FakeClock, callback_url: str
) -> None:
    with FakeCometAPI(api_key=KEY, clock=clock, callbacks=True) as api:
        task_id = create_task(http, api, callback_url=callback_url)
        clock.advance(60)
        wait_for(lambda: len(api.callback_deliveries) == 1)

    assert _CallbackReceiver.received[0]["task_id"] == task_id


def test_deliver_callbacks_records_unreachable_url(
    api: FakeCometAPI, http: requests.Session, clock: FakeClock
) -> None:
    task_id = create_task(http, api, callback_url="http://127.0.0.1:9/unreachable")
    clock.advance(60)

    [delivery] = api.deliver_callbacks()

    assert (delivery.task_id, delivery.status_code) == (task_id, None)
    assert "ConnectionError" in delivery.error


# pytest plugin -------------------------------------------------------------------------------


def test_plugin_fake_cometapi_runs_on_real_time(fake_cometapi: FakeCometAPI) -> None:
    response = requests.post(
        f"{fake_cometapi.url}/runway/feed",
        json={"task_id": fake_cometapi.add_task()},
        headers={"Authorization": "Bearer test-key"},
        timeout=5,
    )

    assert response.status_code == 200
    assert fake_cometapi.clock is None


def test_plugin_clocked_server_moves_with_the_clock(
    fake_cometapi_clocked: FakeCometAPI, fake_cometapi_clock: FakeClock
) -> None:
    task_id = fake_cometapi_clocked.add_task()

    fake_cometapi_clock.advance(60)

    assert fake_cometapi_clocked.task_phase(task_id) == "succeeded"


def test_plugin_points_django_settings_at_the_server(fake_cometapi: FakeCometAPI) -> None:
    from django.conf import settings

    if not settings.configured:
        pytest.skip("Django settings are not configured in this run")

    assert settings.RUNWAY_FEED["BASE_URL"] == fake_cometapi.url
    assert settings.RUNWAY_FEED["API_KEY"] == "test-key"
