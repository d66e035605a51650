from __future__ import annotations

from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "example_project.videos"
    label = "videos"
    verbose_name = "Example videos"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing the module connects its @receiver functions (dispatch_uid keeps it once).
        from . import receivers  # noqa: F401
