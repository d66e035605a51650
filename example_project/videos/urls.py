from __future__ import annotations

from django.urls import path

from . import views

app_name = "videos"

urlpatterns = [
    path("", views.home, name="home"),
    path("videos/", views.video_list, name="list"),
    path("videos/new/", views.new_video, name="new"),
    path("videos/<int:pk>/status.json", views.task_status, name="status"),
    path("notifications.json", views.notifications_json, name="notifications"),
    path("notifications/read/", views.notifications_read, name="notifications-read"),
]
