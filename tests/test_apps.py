"""What AppConfig.ready wires: the hooks through which lower layers reach higher ones."""

from __future__ import annotations

from django_runway_feed import downloads, models, outbox, services


def test_ready_registers_the_services_the_manager_calls():
    assert models.task_services() is services


def test_ready_registers_the_download_hook_once():
    outbox.when_succeeded(downloads.on_task_succeeded)  # a second registration changes nothing

    assert outbox._success_hooks.count(downloads.on_task_succeeded) == 1
