from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from flows.webhook_views import webhook
from orchestrator.health import health
from orchestrator.ops import metrics, ready

urlpatterns = [
    path("health", health, name="health"),
    path("ready", ready, name="ready"),
    path("metrics", metrics, name="metrics"),
    path("api/v1/", include("orchestrator.api_urls")),
    path("hooks/<slug:slug>", webhook, name="webhook"),
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
