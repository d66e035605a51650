"""The example site in a real browser: log in, ask for a video, watch it render, get notified.

Progress moves because the test polls in-process between page checks (the fake CometAPI runs on
the test's clock); the page's own script picks the changes up through its JSON view. Nothing
here measures time: Playwright's ``expect`` waits until the page shows what it should.

With RUNWAY_SCREENSHOTS=1 the test also saves docs/images/example-videos.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from django_runway_feed.models import RunwayTask
from django_runway_feed.statuses import Status
from django_runway_feed.testing import TaskScript

pytestmark = [pytest.mark.browser, pytest.mark.urls("example_project.urls")]

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "example-videos.png"


def poll_all() -> None:
    for task in RunwayTask.objects.unfinished():
        task.refresh_from_feed()


def test_user_creates_a_video_and_watches_it_finish(
    browser_page, live_server, transactional_db, django_user_model, api, clock
):
    from playwright.sync_api import expect

    page = browser_page
    alice = django_user_model.objects.create_user("alice", password="pw-alice")
    # Two older videos of Alice's: one still rendering, one the moderation refuses.
    api.script_next(
        TaskScript(queued_for=0, run_for=100),
        TaskScript(queued_for=0, run_for=1, outcome="failed", failure="The prompt was flagged."),
        TaskScript(queued_for=2, run_for=10),
    )
    RunwayTask.objects.generate("a lighthouse at dusk, slow dolly in", content_object=alice)
    RunwayTask.objects.generate("something the moderation refuses", content_object=alice)

    page.goto(f"{live_server.url}/videos/new/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/videos/new/")

    # The app's own validation, shown next to the field it is about.
    page.get_by_role("button", name="Create video").click()
    expect(page.locator("#id_prompt_errors")).to_have_text("Enter a prompt or an image URL.")

    page.get_by_label("Prompt").fill("a red fox running through snow, cinematic")
    page.get_by_label("Seconds").select_option("10")
    page.get_by_role("button", name="Create video").click()
    expect(page).to_have_url(f"{live_server.url}/videos/")
    fox = page.locator(".card", has_text="a red fox running through snow")
    expect(fox.locator('[data-role="status"]')).to_have_text("Queued")
    expect(fox.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    assert page.locator(".card").count() == 3

    # Halfway: the page's script shows the new progress without a reload.
    clock.advance(7)
    poll_all()
    task = RunwayTask.objects.get(prompt__startswith="a red fox")
    assert task.status == Status.RUNNING
    assert 0 < task.progress < 100
    expect(fox.locator('[data-role="status"]')).to_have_text("Running")
    expect(fox.get_by_role("progressbar")).to_have_attribute("aria-valuenow", str(task.progress))
    expect(fox.locator('[data-role="percent"]')).to_have_text(f"{task.progress}%")
    refused = page.locator(".card", has_text="something the moderation refuses")
    expect(refused.locator('[data-role="failure"]')).to_have_text("The prompt was flagged.")

    # Done: the player appears, and the header counts the two notifications.
    clock.advance(60)
    poll_all()
    task.refresh_from_db()
    assert task.status == Status.SUCCEEDED
    expect(fox.locator("video")).to_have_attribute("src", task.result_url)
    expect(fox.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator('[data-role="notification-count"]')).to_have_text("2")
    page.locator(".notifications summary").click()
    expect(page.locator(".notification-succeeded")).to_have_text(
        "Your video “a red fox running through snow, cinematic” is ready."
    )
    expect(page.locator(".notification-failed")).to_have_text(
        "Your video “something the moderation refuses” failed: The prompt was flagged."
    )
    assert not page.locator(".card", has_text="lighthouse").locator("video").count()

    if os.environ.get("RUNWAY_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        # Let the first frame of the (fake, playable) clip load before the picture is taken.
        page.wait_for_function("document.querySelector('.card video').readyState >= 4")
        page.screenshot(
            path=str(SCREENSHOT),
            clip={"x": 0, "y": 0, "width": 1280, "height": 600},
            animations="disabled",
        )


def log_in(page, live_server, next_url: str = "/videos/") -> None:
    page.goto(f"{live_server.url}{next_url}")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("pw-alice")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{next_url}")


def test_failed_video_looks_the_same_live_and_after_a_reload(
    browser_page, live_server, transactional_db, django_user_model, api, clock
):
    from playwright.sync_api import expect

    page = browser_page
    django_user_model.objects.create_user("alice", password="pw-alice")
    api.script_next(
        TaskScript(queued_for=0, run_for=4, outcome="failed", failure="The prompt was flagged.")
    )
    log_in(page, live_server, "/videos/new/")
    page.get_by_label("Prompt").fill("something the moderation refuses")
    page.get_by_role("button", name="Create video").click()
    page.wait_for_url("**/videos/")
    card = page.locator(".card").first
    expect(page.locator(".message-success")).to_have_count(1)
    expect(card.get_by_role("progressbar")).to_be_visible()

    clock.advance(3)
    poll_all()  # running, at 75 %
    expect(card.locator('[data-role="percent"]')).to_have_text("75%")
    clock.advance(10)
    poll_all()  # failed: its last progress must not read as "nearly done"
    expect(card.locator('[data-role="failure"]')).to_have_text("The prompt was flagged.")
    expect(card.locator(".progress, .bar")).to_be_hidden()
    expect(card.locator('[data-role="percent"]')).to_be_hidden()
    live_class = card.locator(".placeholder").get_attribute("class")
    # The "Video requested" banner has done its job.
    expect(page.locator(".message-success")).to_have_count(0)

    page.reload()

    assert (
        card.locator(".placeholder").get_attribute("class")
        == live_class
        == ("placeholder placeholder-failed")
    )
    expect(card.locator(".bar")).to_be_hidden()
    expect(card.locator('[data-role="percent"]')).to_be_hidden()


def test_header_fits_a_phone_and_the_site_has_a_favicon(
    browser_page, live_server, transactional_db, django_user_model
):
    page = browser_page
    django_user_model.objects.create_user("alice", password="pw-alice")
    page.set_viewport_size({"width": 390, "height": 800})
    log_in(page, live_server)

    header = page.evaluate(
        """() => {
            const box = s => document.querySelector(s).getBoundingClientRect();
            return {
                brand: box('.brand'), nav: box('.nav'), topbar: box('.topbar'),
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                icon: document.querySelector('link[rel="icon"]').href,
            };
        }"""
    )
    response = page.request.get(header["icon"])

    assert header["overflow"] <= 0
    assert header["topbar"]["height"] < 64  # one line: two would be about 100 px
    assert header["nav"]["right"] <= 390
    assert (
        abs(
            header["brand"]["y"]
            + header["brand"]["height"] / 2
            - (header["nav"]["y"] + header["nav"]["height"] / 2)
        )
        < 8
    )
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg")
