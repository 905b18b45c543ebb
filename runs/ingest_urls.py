"""Log ingestion, included under /api/v1/ by orchestrator/api_urls.py.

`runs/<id>/logs` is also RunLogs' path and Django takes the first pattern that matches, so this
include must come before `runs_api.RunLogs` (or replace it): RunLogsView answers GET as RunLogs does.
"""

from __future__ import annotations

from django.urls import path

from runs.ingest_api import RunLogsView

urlpatterns = [
    path("runs/<uuid:pk>/logs", RunLogsView.as_view(), name="run-logs"),
]
