from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from orchestrator.health import health

admin.site.site_header = "Furrow"
admin.site.site_title = "Furrow"
admin.site.index_title = "Workflows, runs and logs"

urlpatterns = [
    path("health", health, name="health"),
    path("api/v1/", include("orchestrator.api_urls")),
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
