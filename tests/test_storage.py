"""``django_runway_feed.storage`` keeps the download API's documented import path."""

from __future__ import annotations

import types

from django_runway_feed import downloads, safe_fetch, storage


def test_storage_names_are_the_download_modules_names():
    assert storage.stored_file_url is downloads.stored_file_url
    assert storage.queue_download is downloads.queue_download
    assert storage.download_result is downloads.download_result
    assert storage.attempt_lease_seconds is downloads.attempt_lease_seconds
    assert storage.QUEUED_HOLD_SECONDS == downloads.QUEUED_HOLD_SECONDS
    assert storage.SafeDownloader is safe_fetch.SafeDownloader


def test_storage_exports_every_public_name_of_both_modules():
    public = {
        name
        for module in (downloads, safe_fetch)
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
    }

    assert public <= set(storage.__all__)
