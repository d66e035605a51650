from __future__ import annotations

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from django_runway_feed.schedules import POLL_FUNC

pytestmark = pytest.mark.django_db(transaction=True)


def test_migrate_twice_leaves_one_schedule():
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)

    schedules = Schedule.objects.filter(name="django_runway_feed.poll")
    assert schedules.count() == 1
    assert schedules.get().func == POLL_FUNC
    assert schedules.get().schedule_type == Schedule.MINUTES


def test_schedule_command_remove_deletes_it(capsys):
    call_command("runway_schedule")
    call_command("runway_schedule", "--remove")

    assert not Schedule.objects.filter(name="django_runway_feed.poll").exists()
    assert "Removed 1 schedule(s)." in capsys.readouterr().out


def test_schedule_command_removes_duplicates():
    Schedule.objects.create(name="django_runway_feed.poll", func="x.y")
    Schedule.objects.create(name="django_runway_feed.poll", func="x.y")

    call_command("runway_schedule")

    assert Schedule.objects.filter(name="django_runway_feed.poll").count() == 1
    assert Schedule.objects.get(name="django_runway_feed.poll").func == POLL_FUNC


def test_auto_schedule_off_installs_nothing(settings):
    Schedule.objects.all().delete()
    settings.RUNWAY_FEED = {**settings.RUNWAY_FEED, "AUTO_SCHEDULE": False}

    call_command("migrate", verbosity=0)

    assert not Schedule.objects.exists()
