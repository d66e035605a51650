from __future__ import annotations

from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The app's callback endpoint (used when RUNWAY_FEED["CALLBACK_BASE_URL"] is set).
    path("runway-feed/", include("django_runway_feed.urls")),
    # Log in and out with Django's own views (templates in videos/templates/registration/).
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("example_project.videos.urls")),
]

if settings.DEBUG and settings.MEDIA_URL:
    # Stored videos (DOWNLOAD_RESULTS) in development; a real site serves MEDIA_URL itself.
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
