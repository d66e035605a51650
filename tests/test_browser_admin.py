"""The task admin in a real browser: the list with its progress bars, a task page with its
timeline and video, and the "Poll now" button moving a task on.

The fake CometAPI runs on the test's clock; the test advances it and polls in-process, and the
admin's own "Poll now" runs in the live server. Nothing here measures time: Playwright's
``expect`` waits until the page shows what it should.

With RUNWAY_SCREENSHOTS=1 the test also saves docs/images/admin-changelist.png and
docs/images/admin-task.png.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.utils import timezone

from django_runway_feed.models import EventKind, PollerState, RunwayTask, TaskEvent
from django_runway_feed.statuses import Status
from django_runway_feed.testing import FakeClock, TaskScript
from tests.testapp.models import Product

pytestmark = pytest.mark.browser

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


@pytest.fixture
def clock() -> FakeClock:
    # Starts at the real time, so the provider's timestamps on the task page read as today.
    return FakeClock(start=time.time())


def serve_static_files(page: Any) -> None:
    """Answer /static/ requests from the apps' static folders.

    The test settings leave out django.contrib.staticfiles (a host site has it), so the live
    server does not serve the admin's CSS; the browser gets it from here instead.
    """
    prefix = "/" + settings.STATIC_URL.strip("/") + "/"

    def handle(route: Any) -> None:
        path = urlsplit(route.request.url).path
        found = finders.find(path[len(prefix) :]) if path.startswith(prefix) else None
        if found:
            route.fulfill(path=found)
        else:
            route.fulfill(status=404, body="not found")

    page.route(f"**{prefix}**", handle)


def screenshot(page: Any, name: str, **options: Any) -> None:
    if os.environ.get("RUNWAY_SCREENSHOTS"):
        IMAGES.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(IMAGES / name), **options)


def poll(*tasks: RunwayTask) -> None:
    for task in tasks:
        task.refresh_from_feed()


def test_operator_watches_tasks_and_polls_one_to_its_end(
    browser_page, live_server, transactional_db, django_user_model, api, clock
):
    from playwright.sync_api import expect

    page = browser_page
    serve_static_files(page)
    django_user_model.objects.create_superuser("operator", password="pw-operator")
    shop = Product.objects.create(name="Spring campaign")
    api.script_next(
        TaskScript(queued_for=0, run_for=40),  # the fox: the one we poll by hand
        TaskScript(queued_for=0, run_for=200),
        TaskScript(queued_for=0, run_for=5, output_location="legacy_video_url"),
        TaskScript(queued_for=0, run_for=3, outcome="failed", failure="The prompt was flagged."),
        TaskScript(queued_for=500, run_for=10),
    )
    fox = RunwayTask.objects.generate(
        "a red fox running through fresh snow, cinematic", content_object=shop
    )
    coast = RunwayTask.objects.generate(
        "aerial shot of a rocky coastline at sunset", content_object=shop
    )
    cat = RunwayTask.objects.generate("a cat surfing a wave, slow motion", seconds=10)
    flagged = RunwayTask.objects.generate("something the moderation refuses")
    clouds = RunwayTask.objects.generate("timelapse of clouds rolling over mountains")
    clock.advance(20)
    poll(fox, coast, cat, flagged, clouds)
    PollerState.objects.create(pk=1, last_success_at=timezone.now())
    fox.refresh_from_db()
    assert (fox.status, 0 < fox.progress < 100) == (Status.RUNNING, True)

    page.goto(f"{live_server.url}/admin/django_runway_feed/runwaytask/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("pw-operator")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/django_runway_feed/runwaytask/")
    # Room for every column: a wide window and the admin's app menu folded away.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.locator("#toggle-nav-sidebar").click()

    # The list: one progress bar per task, badges, and the summary above.
    bars = page.get_by_role("progressbar")
    expect(bars).to_have_count(5)
    fox_row = page.locator("#result_list tbody tr", has_text="a red fox running")
    expect(fox_row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", str(fox.progress))
    expect(fox_row.locator(".rf-badge")).to_have_text("Running")
    expect(fox_row.locator(".field-host_object a")).to_have_text(f"product #{shop.pk}")
    flagged_row = page.locator("#result_list tbody tr", has_text="moderation refuses")
    expect(flagged_row.locator(".rf-badge")).to_have_text("Failed")
    expect(flagged_row.locator(".field-last_error_excerpt")).to_have_text("The prompt was flagged.")
    expect(page.locator(".rf-summary__unfinished")).to_have_text("3")
    expect(page.locator(".rf-summary__health time")).to_contain_text("ago")
    # The bar is drawn: its fill is as wide as the progress says.
    fill = fox_row.locator(".rf-progress__fill")
    width = fill.evaluate("el => el.getBoundingClientRect().width")
    track = fox_row.locator(".rf-progress").evaluate("el => el.clientWidth")
    assert abs(width - track * fox.progress / 100) <= 1.5
    screenshot(page, "admin-changelist.png")

    # The fox's page: running, its timeline, no video yet.
    clock.advance(60)  # the provider has finished it; we have not polled yet
    fox_row.locator(".field-short_id a").click()
    expect(page.locator(".field-status_column .rf-badge")).to_have_text("Running")
    timeline = page.locator(".rf-timeline__table tbody tr")
    expect(timeline).to_have_count(2)  # submitting -> queued, queued -> running
    expect(page.locator("video")).to_have_count(0)

    page.get_by_role("button", name="Poll now").click()

    expect(page.locator(".messagelist")).to_have_text("Polled 1 task.")
    expect(page.locator(".field-status_column .rf-badge")).to_have_text("Succeeded")
    expect(page.locator(".field-progress_column .rf-progress__label")).to_have_text("100%")
    expect(timeline).to_have_count(4)
    expect(timeline.first).to_contain_text("Manual poll")
    expect(timeline.nth(1)).to_contain_text("succeeded")
    fox.refresh_from_db()
    video = page.locator("video.rf-video")
    expect(video).to_have_attribute("src", fox.result_url)
    expect(video).to_have_attribute("controls", "")
    # Finished: poll and stop no longer apply; resubmit does.
    expect(page.get_by_role("button", name="Poll now")).to_have_count(0)
    expect(page.get_by_role("button", name="Resubmit")).to_have_count(1)
    assert TaskEvent.objects.filter(task=fox, kind=EventKind.MANUAL_POLL).count() == 1
    assert api.call_count(fox.task_id) == 2
    screenshot(page, "admin-task.png", full_page=True)


# -- layout at three widths, and the live update ----------------------------------------------

KEY_COLUMNS = ("short_id", "status_column", "progress_column", "age")
ALL_COLUMNS = (
    "short_id",
    "route_column",
    "status_column",
    "progress_column",
    "prompt_excerpt",
    "host_object",
    "age",
    "poll_count",
    "last_error_excerpt",
)
LAYOUT = """() => {
    const box = el => el ? el.getBoundingClientRect() : null;
    const results = document.querySelector('#changelist .results');
    const shown = [...document.querySelectorAll('#result_list thead th')]
        .filter(th => th.getBoundingClientRect().width > 0)
        .map(th => [...th.classList].find(c => c.startsWith('column-')))
        .filter(Boolean).map(c => c.slice(7));
    const rows = [...document.querySelectorAll('#result_list tbody tr')].map(tr => box(tr).height);
    return {
        pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
        resultsOverflow: results ? results.scrollWidth - results.clientWidth : 0,
        tableRight: box(document.querySelector('#result_list')).right,
        viewport: window.innerWidth,
        shown: shown,
        rowHeights: rows,
    };
}"""


def log_in(page: Any, live_server: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_superuser("operator", password="pw-operator")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/django_runway_feed/runwaytask/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("pw-operator")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/runwaytask/")


def layout_tasks() -> list[RunwayTask]:
    shop = Product.objects.create(name="Spring campaign with a rather long product name")
    long_prompt = (
        "aerial shot of a rocky coastline at sunset, waves crashing against the cliffs, "
        "seagulls circling, golden light, slow dolly forward, cinematic, 35 mm film grain"
    )
    rows = []
    for i, status in enumerate(
        [Status.RUNNING, Status.QUEUED, Status.SUCCEEDED, Status.FAILED, Status.RUNNING]
    ):
        task = RunwayTask.objects.create(
            task_id=f"3d957031-aaaa-bbbb-cccc-12345678900{i}",
            route="generate",
            status=status,
            progress=(40, 0, 100, 97, 63)[i],
            prompt=long_prompt,
            poll_count=12,
            last_error="ReadTimeout: HTTPSConnectionPool(host='api.cometapi.com', port=443)"
            if i == 1
            else "",
            fail_reason="The prompt was flagged by the moderation." if i == 3 else "",
            content_object=shop,
        )
        rows.append(task)
    for n in range(6):
        TaskEvent.objects.create(
            task=rows[0],
            kind=EventKind.TRANSITION,
            from_status="queued",
            to_status="running",
            progress=n * 10,
            message="Polled: progress moved on, and the provider said something rather long "
            "about it that would otherwise wrap onto a second and third line",
        )
    PollerState.objects.create(pk=1, last_success_at=timezone.now())
    return rows


@pytest.mark.parametrize(
    ("width", "expected"),
    [(1440, ALL_COLUMNS), (1280, ALL_COLUMNS), (800, KEY_COLUMNS), (390, KEY_COLUMNS)],
)
def test_changelist_fits_the_window(
    browser_page, live_server, transactional_db, django_user_model, width, expected
):
    page = browser_page
    serve_static_files(page)
    layout_tasks()
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, live_server, django_user_model)

    layout = page.evaluate(LAYOUT)

    assert set(expected) <= set(layout["shown"])
    assert layout["pageOverflow"] <= 0
    assert layout["resultsOverflow"] <= 0
    assert max(layout["rowHeights"]) < 48  # one line per row: a second adds about 17 px


TASK_LAYOUT = """() => {
    const box = el => el.getBoundingClientRect();
    const video = document.querySelector('video.rf-video');
    return {
        pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
        video: video ? [box(video).width, box(video).height] : null,
        timelineRows: [...document.querySelectorAll('.rf-timeline__table tbody tr')]
            .map(tr => box(tr).height),
        timelineOverflow: (t => t.scrollWidth - t.clientWidth)(
            document.querySelector('.rf-timeline')),
        created: document.querySelector('.field-created_time .readonly').textContent,
    };
}"""


@pytest.mark.parametrize(("width", "min_video_width"), [(1440, 600), (800, 400), (390, 300)])
def test_task_page_fits_the_window(
    browser_page, live_server, transactional_db, django_user_model, width, min_video_width
):
    page = browser_page
    serve_static_files(page)
    [running, *_rest] = layout_tasks()
    RunwayTask.objects.filter(pk=running.pk).update(
        status=Status.SUCCEEDED, progress=100, result_url="https://cdn.example.com/v.mp4"
    )
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, live_server, django_user_model)

    page.goto(f"{live_server.url}/admin/django_runway_feed/runwaytask/{running.pk}/change/")
    layout = page.evaluate(TASK_LAYOUT)

    assert layout["pageOverflow"] <= 0
    video_width, video_height = layout["video"]
    assert video_width >= min_video_width
    assert abs(video_height - video_width * 9 / 16) <= 2
    assert len(layout["timelineRows"]) == 6
    assert max(layout["timelineRows"]) < 48  # one line per event
    assert layout["timelineOverflow"] <= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", layout["created"].strip())


def test_changelist_updates_itself_without_a_reload(
    browser_page, live_server, transactional_db, django_user_model
):
    from playwright.sync_api import expect

    page = browser_page
    serve_static_files(page)
    [running, *_rest] = layout_tasks()
    log_in(page, live_server, django_user_model)
    requests: list[float] = []
    page.on(
        "request",
        lambda request: "/runwaytask/live/" in request.url and requests.append(time.monotonic()),
    )
    row = page.locator(f'#result_list tbody tr:has([data-rf-task="{running.pk}"])')
    expect(row.locator(".rf-badge")).to_have_text("Running")
    page.evaluate("window.rfNotReloaded = true")
    started = time.monotonic()

    RunwayTask.objects.filter(pk=running.pk).update(status=Status.SUCCEEDED, progress=100)

    expect(row.locator(".rf-badge")).to_have_text("Succeeded")
    expect(row.locator(".rf-badge")).to_have_class("rf-badge rf-badge--succeeded")
    expect(row.locator(".rf-progress__label")).to_have_text("100%")
    expect(page.locator(".rf-summary__unfinished")).to_have_text("2")
    expect(page.locator('[data-rf-count="succeeded"]')).to_have_text("2")
    assert page.evaluate("window.rfNotReloaded") is True
    # At most one request per 2 s (generous: the first may come 2 s after the page loaded).
    page.wait_for_timeout(4500)
    elapsed = time.monotonic() - started
    assert 1 <= len(requests) <= elapsed / 2 + 2


def test_task_page_updates_itself_without_a_reload(
    browser_page, live_server, transactional_db, django_user_model
):
    from playwright.sync_api import expect

    page = browser_page
    serve_static_files(page)
    [running, *_rest] = layout_tasks()
    log_in(page, live_server, django_user_model)
    page.goto(f"{live_server.url}/admin/django_runway_feed/runwaytask/{running.pk}/change/")
    page.evaluate("window.rfNotReloaded = true")

    RunwayTask.objects.filter(pk=running.pk).update(status=Status.FAILED, progress=55)

    expect(page.locator(".field-status_column .rf-badge")).to_have_text("Failed")
    expect(page.locator(".field-progress_column .rf-progress__label")).to_have_text("55%")
    assert page.evaluate("window.rfNotReloaded") is True
