"""The storage behind ``RunwayTask.output_file`` and ``poster_file``.

Results go to ``STORAGES[RUNWAY_FEED['STORAGE']]``. A ``FileField`` resolves its storage once,
when the model class is built, so it is given this forwarding storage instead: every call looks
the alias up again, and ``task.output_file.url`` answers from the configured storage even when
it is not ``"default"`` or changes (``override_settings`` in tests).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import IO, Any

from django.core.files.base import File
from django.core.files.storage import Storage, storages
from django.utils.deconstruct import deconstructible

from .conf import conf


@deconstructible(path="django_runway_feed.files.ResultStorage")
class ResultStorage(Storage):
    """A :class:`~django.core.files.storage.Storage` that forwards to the configured alias."""

    @property
    def target(self) -> Storage:
        return storages[conf.STORAGE]

    def open(self, name: str, mode: str = "rb") -> File[Any]:
        return self.target.open(name, mode)

    def save(self, name: str | None, content: IO[Any], max_length: int | None = None) -> str:
        return self.target.save(name, content, max_length=max_length)

    def get_valid_name(self, name: str) -> str:
        return self.target.get_valid_name(name)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return self.target.get_available_name(name, max_length=max_length)

    def generate_filename(self, filename: str | os.PathLike[str]) -> str:
        return self.target.generate_filename(filename)

    def path(self, name: str) -> str:
        return self.target.path(name)

    def delete(self, name: str) -> None:
        self.target.delete(name)

    def exists(self, name: str) -> bool:
        return self.target.exists(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        return self.target.listdir(path)

    def size(self, name: str) -> int:
        return self.target.size(name)

    def url(self, name: str | None) -> str:
        return self.target.url(name)

    def get_accessed_time(self, name: str) -> dt.datetime:
        return self.target.get_accessed_time(name)

    def get_created_time(self, name: str) -> dt.datetime:
        return self.target.get_created_time(name)

    def get_modified_time(self, name: str) -> dt.datetime:
        return self.target.get_modified_time(name)


def result_storage() -> ResultStorage:
    """The ``storage=`` callable of the result fields (kept as a reference in migrations)."""
    return ResultStorage()
