"""Include with ``path("runway-feed/", include("django_runway_feed.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "django_runway_feed"

urlpatterns = [
    path("callback/<int:pk>/<str:signature>/", views.callback, name="callback"),
]
