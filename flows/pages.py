"""HTMX pages under the admin for workflows: the graph, versions, editor, run form, triggers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST

from flows import access
from flows.language.canonical import canonical_yaml
from flows.language.errors import DefinitionError, Problem
from flows.language.inputs import InputError
from flows.language.layout import Drawing, StepShape, lay_out, render_svg
from flows.language.spec import WorkflowSpec
from flows.language.validate import compile_definition
from flows.models import Workflow, WorkflowTemplate, WorkflowVersion
from flows.services import (
    VersionNotFound,
    diff_versions,
    parse_definition,
    publish,
    rollback,
)
from flows.triggers import upcoming
from orchestrator.admin_site import page_path, render_page
from orchestrator.schema_form import SchemaForm
from runs import services as run_services
from runs.models import Run
from steps.registry import LANGUAGE_CHECKS, step_type_schemas

RECENT_RUNS = 20


def urls(wrap: Any) -> list[Any]:
    return [
        page_path("templates/", templates_gallery, "templates-gallery", wrap),
        page_path("workflows/<str:name>/", workflow_page, "workflow-page", wrap),
        page_path("workflows/<str:name>/runs/", recent_runs, "workflow-recent-runs", wrap),
        page_path("workflows/<str:name>/start/", start, "workflow-start", wrap),
        page_path("workflows/<str:name>/check/", check_definition, "workflow-check", wrap),
        page_path("workflows/<str:name>/publish/", publish_definition, "workflow-publish", wrap),
        page_path("workflows/<str:name>/diff/", version_diff, "workflow-diff", wrap),
        page_path("workflows/<str:name>/rollback/", roll_back, "workflow-rollback-page", wrap),
        page_path(
            "workflows/<str:name>/pause/",
            pause_or_resume,
            "workflow-pause-page",
            wrap,
            action="pause",
        ),
        page_path(
            "workflows/<str:name>/resume/",
            pause_or_resume,
            "workflow-resume-page",
            wrap,
            action="resume",
        ),
    ]


_DRAWINGS: dict[str, Drawing] = {}
_DRAWINGS_LIMIT = 256


def _drawing(content_hash: str, spec: WorkflowSpec) -> Drawing:
    """Laid out once per content per process, like the compiled spec (flows.models)."""
    drawing = _DRAWINGS.get(content_hash)
    if drawing is not None:
        return drawing
    if len(_DRAWINGS) >= _DRAWINGS_LIMIT:
        _DRAWINGS.clear()
    drawing = _DRAWINGS[content_hash] = lay_out(
        [
            StepShape(
                name=step.name,
                needs=step.needs,
                type=step.type,
                join=str(step.join),
                fan_out=step.for_each is not None,
                gate=step.requires_approval is not None,
            )
            for step in spec.steps
        ]
    )
    return drawing


def graph_svg(
    version: WorkflowVersion,
    *,
    statuses: Mapping[str, str] | None = None,
    links: Mapping[str, str] | None = None,
) -> SafeString:
    """The version's graph as inline SVG (laid out once per content), coloured by `statuses`."""
    drawing = _drawing(version.content_hash, version.spec)
    title = f"{version.workflow.name} v{version.number}: {len(drawing.boxes)} steps"
    # render_svg escapes every name and label it writes.
    return mark_safe(render_svg(drawing, title=title, statuses=statuses, links=links))


def _workflow_for(request: HttpRequest, name: str) -> Workflow:
    workflow = Workflow.objects.select_related("latest_version").filter(name=name).first()
    if workflow is None or not access.allowed(request.user, "view", workflow.pk):
        raise Http404("no such workflow")
    return workflow


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def _editor_text(version: WorkflowVersion | None) -> str:
    if version is None:
        return ""
    return version.source or canonical_yaml(version.definition)


def _page_context(request: HttpRequest, workflow: Workflow, **extra: Any) -> dict[str, Any]:
    user = request.user
    version = workflow.latest_version
    may = {action: access.allowed(user, action, workflow.pk) for action in ("run", "edit")}
    spec = version.spec if version is not None else None
    triggers = list(workflow.triggers.order_by("name"))
    for trigger in triggers:
        trigger.upcoming = (
            upcoming(trigger, 3) if trigger.kind == "cron" and trigger.enabled else []
        )
    versions = list(workflow.versions.select_related("created_by").order_by("-number")[:20])
    context = {
        "title": workflow.name,
        "workflow": workflow,
        "version": version,
        "graph": graph_svg(version) if version is not None else None,
        "versions": versions,
        "triggers": triggers,
        "may_run": may["run"] and version is not None,
        "may_edit": may["edit"],
        "editor_text": _editor_text(version),
        "run_form": SchemaForm(spec.input_schema, prefix="input") if spec is not None else None,
        "problems": [],
        **_recent_runs(workflow),
    }
    context.update(extra)
    return context


def _recent_runs(workflow: Workflow) -> dict[str, Any]:
    runs = list(
        Run.objects.filter(workflow=workflow, parent_step__isnull=True)
        .select_related("version", "created_by")
        .order_by("-created_at")[:RECENT_RUNS]
    )
    return {"runs": runs}


@require_GET
def workflow_page(request: HttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    return render_page(request, "furrow/workflow.html", _page_context(request, workflow))


@require_GET
def recent_runs(request: HttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    return TemplateResponse(
        request,
        "furrow/workflow.html#recent-runs",
        {"workflow": workflow, **_recent_runs(workflow)},
    )


@require_POST
def start(request: HttpRequest, name: str) -> HttpResponse:
    """The Run form: the input schema's fields, validated here and again by the service."""
    workflow = _workflow_for(request, name)
    if not access.allowed(request.user, "run", workflow.pk):
        raise PermissionDenied("you may not run this workflow")
    version = workflow.latest_version
    if version is None:
        raise Http404("the workflow has no version")
    form = SchemaForm(version.spec.input_schema, request.POST, prefix="input")
    if form.is_valid():
        try:
            run = run_services.start_run(
                workflow, form.value(), user=request.user, actor=_actor(request), source="ui"
            )
        except InputError as exc:
            form.add_error(None, str(exc))
        except run_services.InvalidTransition as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Run {str(run.pk)[:8]} started.")
            return redirect("admin:run-page", pk=run.pk)
    context = _page_context(request, workflow, run_form=form)
    return render_page(request, "furrow/workflow.html", context, status=400)


def _check(text: str) -> list[Problem]:
    """Every problem of a definition's text, as the publish would report them."""
    try:
        definition = parse_definition(text)
        compile_definition(definition, step_type_schemas(), LANGUAGE_CHECKS)
    except DefinitionError as exc:
        return list(exc.problems)
    return []


@require_POST
def check_definition(request: HttpRequest, name: str) -> HttpResponse:
    """The editor asks as you type: the problems with their paths, or that it is valid."""
    workflow = _workflow_for(request, name)
    text = request.POST.get("definition", "")
    problems = _check(text)
    if not problems:
        spec_name = _name_of(text)
        if spec_name != workflow.name:
            problems = [Problem("name", f"must stay '{workflow.name}' to publish a version of it")]
    return TemplateResponse(
        request, "furrow/workflow.html#problems", {"problems": problems, "checked": True}
    )


def _name_of(text: str) -> Any:
    try:
        document = parse_definition(text)
    except DefinitionError:
        return None
    return document.get("name") if isinstance(document, dict) else None


@require_POST
def publish_definition(request: HttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    if not access.allowed(request.user, "edit", workflow.pk):
        raise PermissionDenied("you may not edit this workflow")
    text = request.POST.get("definition", "")
    problems = _check(text)
    if not problems and _name_of(text) != workflow.name:
        problems = [Problem("name", f"must stay '{workflow.name}' to publish a version of it")]
    if not problems:
        published = publish(
            parse_definition(text), source=text, user=request.user, actor=_actor(request)
        )
        if published.created:
            messages.success(request, f"Published version {published.version.number}.")
        else:
            messages.info(request, "Nothing changed: the definition is the latest version's.")
        return redirect("admin:workflow-page", name=workflow.name)
    context = _page_context(request, workflow, editor_text=text, problems=problems, checked=True)
    return render_page(request, "furrow/workflow.html", context, status=400)


@require_GET
def version_diff(request: HttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    try:
        old, new = int(request.GET.get("from", "")), int(request.GET.get("to", ""))
        diff = diff_versions(workflow, old, new)
    except ValueError:
        return HttpResponse(
            "from and to must be version numbers", status=400, content_type="text/plain"
        )
    except VersionNotFound as exc:
        raise Http404(str(exc)) from None
    context = {"workflow": workflow, "diff": diff, "old": old, "new": new}
    if request.htmx:
        return TemplateResponse(request, "furrow/workflow.html#diff", context)
    return render_page(
        request, "furrow/diff.html", {**context, "title": f"{workflow.name}: v{old} → v{new}"}
    )


@require_POST
def roll_back(request: HttpRequest, name: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    if not access.allowed(request.user, "edit", workflow.pk):
        raise PermissionDenied("you may not edit this workflow")
    try:
        number = int(request.POST.get("version", ""))
        published = rollback(workflow, number, user=request.user, actor=_actor(request))
    except ValueError:
        messages.error(request, "Choose a version number to roll back to.")
    except VersionNotFound as exc:
        messages.error(request, str(exc))
    except DefinitionError as exc:
        messages.error(request, f"Version {number} no longer validates: {exc}")
    else:
        if published.created:
            messages.success(
                request,
                f"Rolled back: version {published.version.number} has version {number}'s content.",
            )
        else:
            messages.info(request, f"Version {number}'s content is already the latest.")
    return redirect("admin:workflow-page", name=workflow.name)


@require_POST
def pause_or_resume(request: HttpRequest, name: str, action: str) -> HttpResponse:
    workflow = _workflow_for(request, name)
    if not access.allowed(request.user, "edit", workflow.pk):
        raise PermissionDenied("you may not edit this workflow")
    change = run_services.pause_workflow if action == "pause" else run_services.resume_workflow
    change(workflow, actor=_actor(request))
    messages.success(request, f"{workflow.name} {action}d.")
    return redirect("admin:workflow-page", name=workflow.name)


@require_GET
def templates_gallery(request: HttpRequest) -> HttpResponse:
    """Every workflow template with its parameters; `?q=` searches, `?tag=` picks one tag.
    "Use this template" opens the admin's instantiate page, for those who may view templates."""
    query = request.GET.get("q", "").strip()
    tag = request.GET.get("tag", "").strip()
    rows = WorkflowTemplate.objects.order_by("category", "name")
    if query:
        rows = rows.filter(
            Q(name__icontains=query) | Q(title__icontains=query) | Q(description__icontains=query)
        )
    templates = [t for t in rows if not tag or tag in (t.tags or [])]
    context = {
        "title": "Workflow templates",
        "templates": [{"template": t, "parameters": template_parameters(t)} for t in templates],
        "tags": sorted(
            {tag for t in WorkflowTemplate.objects.only("tags") for tag in t.tags or []}
        ),
        "q": query,
        "tag": tag,
        "may_use": request.user.has_perm("flows.view_workflowtemplate"),
    }
    return render_page(request, "furrow/templates.html", context)


def template_parameters(template: WorkflowTemplate) -> list[dict[str, Any]]:
    """The parameters a template's JSON Schema declares: name, type, default, description."""
    schema = template.parameters if isinstance(template.parameters, dict) else {}
    required = set(schema.get("required") or [])
    properties = schema.get("properties") or {}
    return [
        {
            "name": name,
            "type": prop.get("type", "") if isinstance(prop, dict) else "",
            "default": prop.get("default") if isinstance(prop, dict) else None,
            "description": prop.get("description", "") if isinstance(prop, dict) else "",
            "required": name in required,
        }
        for name, prop in properties.items()
    ]
