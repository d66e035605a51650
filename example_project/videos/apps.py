from __future__ import annotations

from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "example_project.videos"
    label = "videos"
    default_auto_field = "django.db.models.BigAutoField"
