from __future__ import annotations

from django.urls import path

from flows import api as flows_api
from runs import api as runs_api

urlpatterns = [
    path("workflows", flows_api.WorkflowList.as_view(), name="workflow-list"),
    path("workflows/<str:name>", flows_api.WorkflowDetail.as_view(), name="workflow-detail"),
    path("workflows/<str:name>/versions", flows_api.VersionList.as_view(), name="version-list"),
    path(
        "workflows/<str:name>/versions/<int:number>",
        flows_api.VersionDetail.as_view(),
        name="version-detail",
    ),
    path("workflows/<str:name>/runs", runs_api.WorkflowRuns.as_view(), name="workflow-runs"),
    path("runs", runs_api.RunList.as_view(), name="run-list"),
    path("runs/<uuid:pk>", runs_api.RunDetail.as_view(), name="run-detail"),
    path("runs/<uuid:pk>/logs", runs_api.RunLogs.as_view(), name="run-logs"),
    path("runs/<uuid:pk>/events", runs_api.RunEvents.as_view(), name="run-events"),
]
