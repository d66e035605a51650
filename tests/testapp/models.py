from __future__ import annotations

from django.db import models


class Product(models.Model):
    """A host-site object that tasks attach to through the generic relation."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class SignalRecord(models.Model):
    """One signal as a receiver saw it (written by tests.testapp.receivers)."""

    signal = models.CharField(max_length=40)
    task_pk = models.BigIntegerField()
    event_pk = models.BigIntegerField(null=True)
    previous = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, blank=True)
    in_atomic_block = models.BooleanField()
    pid = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.signal} task={self.task_pk} event={self.event_pk}"
