from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from flows import api as flows_api
from flows import grant_api, template_api, trigger_api
from runs import api as runs_api
from runs import audit_api, stream_views
from steps import api as steps_api
from steps import catalogue_api, workers_api

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"),
    path("schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("workflows", flows_api.WorkflowList.as_view(), name="workflow-list"),
    path("workflows/<str:name>", flows_api.WorkflowDetail.as_view(), name="workflow-detail"),
    path("workflows/<str:name>/versions", flows_api.VersionList.as_view(), name="version-list"),
    path(
        "workflows/<str:name>/versions/<int:number>",
        flows_api.VersionDetail.as_view(),
        name="version-detail",
    ),
    path("workflows/<str:name>/diff", flows_api.VersionDiff.as_view(), name="version-diff"),
    path(
        "workflows/<str:name>/rollback",
        flows_api.WorkflowRollback.as_view(),
        name="workflow-rollback",
    ),
    path("workflows/<str:name>/runs", runs_api.WorkflowRuns.as_view(), name="workflow-runs"),
    path("runs", runs_api.RunList.as_view(), name="run-list"),
    path("runs/<uuid:pk>", runs_api.RunDetail.as_view(), name="run-detail"),
    path("", include("runs.ingest_urls")),  # runs/<id>/logs: GET reads, POST ingests
    path("runs/<uuid:pk>/events/stream", stream_views.run_events, name="run-events-stream"),
    path("runs/<uuid:pk>/logs/stream", stream_views.run_logs, name="run-logs-stream"),
    path("events/stream", stream_views.all_events, name="events-stream"),
    path("runs/<uuid:pk>/events", runs_api.RunEvents.as_view(), name="run-events"),
    path(
        "runs/<uuid:pk>/approvals/<str:step>", runs_api.RunApproval.as_view(), name="run-approval"
    ),
    path("approvals", runs_api.ApprovalList.as_view(), name="approval-list"),
    path("runs/<uuid:pk>/pause", runs_api.RunPause.as_view(), name="run-pause"),
    path("runs/<uuid:pk>/resume", runs_api.RunResume.as_view(), name="run-resume"),
    path("runs/<uuid:pk>/rerun", runs_api.RunRerun.as_view(), name="run-rerun"),
    path("workflows/<str:name>/pause", runs_api.WorkflowPause.as_view(), name="workflow-pause"),
    path("workflows/<str:name>/resume", runs_api.WorkflowResume.as_view(), name="workflow-resume"),
    path("dead-letters", runs_api.DeadLetterList.as_view(), name="dead-letter-list"),
    path("dead-letters/<int:pk>", runs_api.DeadLetterDetail.as_view(), name="dead-letter-detail"),
    path(
        "dead-letters/<int:pk>/requeue",
        runs_api.DeadLetterRequeue.as_view(),
        name="dead-letter-requeue",
    ),
    path(
        "dead-letters/<int:pk>/discard",
        runs_api.DeadLetterDiscard.as_view(),
        name="dead-letter-discard",
    ),
    path("runs/<uuid:pk>/cancel", runs_api.RunCancel.as_view(), name="run-cancel"),
    path("callbacks/<str:token>", runs_api.CallbackView.as_view(), name="callback"),
    path("step-types", catalogue_api.StepTypeList.as_view(), name="step-type-list"),
    path(
        "step-types/<str:type_name>",
        catalogue_api.StepTypeDetail.as_view(),
        name="step-type-detail",
    ),
    path("secrets", steps_api.SecretList.as_view(), name="secret-list"),
    path("secrets/<str:name>", steps_api.SecretDetail.as_view(), name="secret-detail"),
    path("", include("steps.api_urls")),
    path("", include("runs.hooks_urls")),
    path("audit", audit_api.AuditList.as_view(), name="audit-list"),
    path("workers", workers_api.WorkerList.as_view(), name="worker-list"),
    path("workers/<str:name>", workers_api.WorkerDetail.as_view(), name="worker-detail"),
    path("templates", template_api.TemplateList.as_view(), name="template-list"),
    path("templates/import", template_api.TemplateImport.as_view(), name="template-import"),
    path("templates/<str:name>", template_api.TemplateDetail.as_view(), name="template-detail"),
    path(
        "templates/<str:name>/instantiate",
        template_api.TemplateInstantiate.as_view(),
        name="template-instantiate",
    ),
    path("triggers", trigger_api.TriggerList.as_view(), name="trigger-list"),
    path("triggers/<int:pk>", trigger_api.TriggerDetail.as_view(), name="trigger-detail"),
    path(
        "triggers/<int:pk>/enable",
        trigger_api.TriggerSwitch.as_view(enabled=True),
        name="trigger-enable",
    ),
    path(
        "triggers/<int:pk>/disable",
        trigger_api.TriggerSwitch.as_view(enabled=False),
        name="trigger-disable",
    ),
    path("workflows/<str:name>/grants", grant_api.WorkflowGrants.as_view(), name="workflow-grants"),
    path(
        "workflows/<str:name>/grants/<int:pk>",
        grant_api.WorkflowGrantDetail.as_view(),
        name="workflow-grant-detail",
    ),
    path(
        "workflows/<str:name>/triggers",
        trigger_api.WorkflowTriggers.as_view(),
        name="workflow-triggers",
    ),
    path("workflows/<str:name>/audit", audit_api.WorkflowAudit.as_view(), name="workflow-audit"),
]
