"""The app speaks German (the shipped translation): complete, compiled, and used by the admin,
the validation errors and the operator actions' reports."""

from __future__ import annotations

import gettext
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation

from django_runway_feed import actions
from django_runway_feed.models import PollerState, RunwayTask
from django_runway_feed.statuses import Status

APP = Path(__file__).resolve().parent.parent / "django_runway_feed"
CATALOGUE = APP / "locale" / "de" / "LC_MESSAGES"
CHANGELIST = "/admin/django_runway_feed/runwaytask/"


def po_entries(path: Path) -> dict[tuple[str, str | None], list[str]]:
    """(msgid, msgid_plural) -> msgstr forms, for every entry but the header."""

    def text(block: str, keyword: str) -> str | None:
        match = re.search(rf'^{re.escape(keyword)} ((?:".*"\n?)+)', block, re.M)
        if match is None:
            return None
        parts = re.findall(r'^"(.*)"$', match.group(1), re.M)
        return "".join(parts).encode("latin-1", "backslashreplace").decode("unicode_escape")

    entries = {}
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        msgid = text(block, "msgid")
        if not msgid:
            continue
        plural = text(block, "msgid_plural")
        forms = [text(block, "msgstr")] if plural is None else []
        forms += [text(block, f"msgstr[{n}]") for n in range(2)] if plural is not None else []
        assert "#, fuzzy" not in block, msgid
        entries[(msgid, plural)] = [form or "" for form in forms]
    return entries


def require_gettext() -> None:
    if shutil.which("xgettext") and shutil.which("msgfmt"):
        return
    message = "needs GNU gettext (apt-get install gettext)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_german_catalogue_translates_every_message():
    entries = po_entries(CATALOGUE / "django.po")

    assert len(entries) > 150
    assert [key for key, forms in entries.items() if not all(forms)] == []


def test_makemessages_finds_nothing_new_to_translate(tmp_path):
    require_gettext()
    copy = tmp_path / "django_runway_feed"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "makemessages",
            "--locale",
            "de",
            "--no-obsolete",
            "--no-location",
        ],
        cwd=copy,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": str(APP.parent),
        },
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    fresh = po_entries(copy / "locale" / "de" / "LC_MESSAGES" / "django.po")
    committed = po_entries(CATALOGUE / "django.po")
    # makemessages keeps the translations it had, so equal entries mean nothing new or gone.
    assert fresh == committed


def test_compiled_catalogue_matches_the_po_file():
    with (CATALOGUE / "django.mo").open("rb") as compiled:
        catalogue = gettext.GNUTranslations(compiled)

    for (msgid, plural), forms in po_entries(CATALOGUE / "django.po").items():
        if plural is None:
            assert catalogue.gettext(msgid) == forms[0]
        else:
            assert [catalogue.ngettext(msgid, plural, n) for n in (1, 2)] == forms


@pytest.mark.django_db
def test_admin_task_list_in_german(admin_client, settings):
    settings.LANGUAGE_CODE = "de"
    RunwayTask.objects.create(route="generate", status=Status.RUNNING, prompt="eine Katze")
    PollerState.objects.create(pk=1, last_success_at=timezone.now())

    html = admin_client.get(CHANGELIST).content.decode()

    assert "Runway-Aufgaben" in html  # the model's plural name, in the breadcrumbs
    assert '<span class="rf-badge rf-badge--running">Läuft</span>' in html
    assert "Unerledigt:" in html
    assert "Letzte erfolgreiche Abfrage:" in html
    assert "Jetzt abfragen" in html  # an action
    assert "Fortschritt" in html  # a column


@pytest.mark.django_db
def test_validation_errors_in_german():
    with translation.override("de"), pytest.raises(ValidationError) as refused:
        RunwayTask.objects.generate("", ratio="wide", seconds=7)

    assert refused.value.message_dict == {
        "prompt": ["Geben Sie einen Prompt oder eine Bild-URL ein."],
        "ratio": ["ratio muss wie '1280:720' aussehen (Breite:Höhe)."],
        "seconds": ["seconds muss 5 oder 10 sein."],
    }


@pytest.mark.parametrize(
    ("done", "skipped", "expected"),
    [
        (1, 0, "1 Aufgabe gestoppt."),
        (2, 1, "2 Aufgaben gestoppt. 1 Aufgabe übersprungen: bereits beendet."),
        (0, 2, "0 Aufgaben gestoppt. 2 Aufgaben übersprungen: 2 bereits beendet."),
    ],
)
def test_action_reports_in_german_with_plurals(done, skipped, expected):
    tasks = [RunwayTask(pk=n) for n in range(done + skipped)]
    report = actions.ActionReport("Stopped", done=tasks[:done])
    for task in tasks[done:]:
        report.skip(task, actions.ALREADY_FINISHED)

    with translation.override("de"):
        assert report.message() == expected
