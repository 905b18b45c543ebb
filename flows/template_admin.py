"""Workflow templates in the admin: a list with filters and search, a form that the service
validates, built-ins read-only, and an Instantiate page that publishes a workflow from one.
Registered from flows/admin.py."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from flows import access
from flows import workflow_templates as service
from flows.language.errors import DefinitionError, Problem
from flows.language.placeholders import apply_defaults
from flows.models import WorkflowTemplate

FIELDS = ["name", "title", "description", "category", "tags", "parameters", "body"]


def actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


class TemplateForm(forms.ModelForm):
    class Meta:
        model = WorkflowTemplate
        fields = FIELDS
        widgets = {
            "body": forms.Textarea(attrs={"rows": 24, "cols": 100, "class": "vLargeTextField"})
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = self.instance
        for field, value in cleaned.items():
            setattr(candidate, field, value)
        for problem in service.template_problems(candidate):
            field = problem.path.split(".")[0].split("[")[0]
            field = "body" if field == "definition" else field
            self.add_error(field if field in self.fields else None, str(problem))
        return cleaned


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ["name", "title", "category", "tag_list", "source", "updated_at", "instantiate"]
    list_filter = ["source", "category"]
    search_fields = ["name", "title", "description"]
    list_select_related = ["created_by"]
    readonly_fields = ["source", "created_by", "created_at", "updated_at", "instantiate"]

    @admin.display(description="tags")
    def tag_list(self, template: WorkflowTemplate) -> str:
        return ", ".join(template.tags or [])

    @admin.display(description="")
    def instantiate(self, template: WorkflowTemplate) -> str:
        if not template.pk:
            return "-"
        url = reverse("admin:flows_workflowtemplate_instantiate", args=[template.pk])
        return format_html('<a class="button" href="{}">Instantiate</a>', url)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.is_builtin:
            return [*FIELDS, *self.readonly_fields]
        return self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Built-ins come from flows/template_pack: shown, never changed here.
        return not (obj is not None and obj.is_builtin) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return not (obj is not None and obj.is_builtin) and super().has_delete_permission(
            request, obj
        )

    def save_model(
        self, request: HttpRequest, obj: WorkflowTemplate, form: Any, change: bool
    ) -> None:
        if not change:
            obj.source = WorkflowTemplate.Source.USER
        service.save_template(obj, actor=actor(request), user=request.user)

    def delete_model(self, request: HttpRequest, obj: WorkflowTemplate) -> None:
        service.delete_template(obj, actor=actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WorkflowTemplate]) -> None:
        for template in queryset:
            if template.is_builtin:
                self.message_user(request, f"{template}: built in, kept.", messages.WARNING)
            else:
                self.delete_model(request, template)

    def get_urls(self) -> list[Any]:
        page = self.admin_site.admin_view(self.instantiate_view)
        own = [
            path("<path:object_id>/instantiate/", page, name="flows_workflowtemplate_instantiate")
        ]
        return own + super().get_urls()

    def instantiate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        template = get_object_or_404(WorkflowTemplate, pk=object_id)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        form = InstantiateForm(request.POST or None, template=template)
        problems: list[Problem] = []
        if request.method == "POST" and form.is_valid():
            outcome = instantiate_from_form(request, template, form)
            if isinstance(outcome, HttpResponse):
                return outcome
            problems = outcome
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Instantiate {template.title or template.name}",
            "template_obj": template,
            "form": form,
            "problems": problems,
            "schema_json": json.dumps(template.parameters, indent=2),
        }
        return TemplateResponse(request, "admin/flows/workflowtemplate/instantiate.html", context)


class InstantiateForm(forms.Form):
    workflow = forms.CharField(
        max_length=100, help_text="The workflow to publish (new, or one you may edit)."
    )
    parameters = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 80, "class": "vLargeTextField"}),
        help_text="A JSON object; the template's defaults are filled in.",
    )

    def __init__(self, *args: Any, template: WorkflowTemplate, **kwargs: Any) -> None:
        defaults = apply_defaults(template.parameters, {})
        initial = {"workflow": template.name, "parameters": json.dumps(defaults, indent=2)}
        super().__init__(*args, initial=initial, **kwargs)

    def clean_parameters(self) -> Any:
        try:
            value = json.loads(self.cleaned_data["parameters"] or "{}")
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object of parameter values")
        return value


def instantiate_from_form(
    request: HttpRequest, template: WorkflowTemplate, form: InstantiateForm
) -> HttpResponse | list[Problem]:
    """Publish through the service; a redirect to the workflow, or the problems to show."""
    name = form.cleaned_data["workflow"]
    try:
        done = service.instantiate(
            template, name, form.cleaned_data["parameters"], actor=actor(request), user=request.user
        )
    except service.InstantiateDenied as exc:
        return [Problem("workflow", str(exc))]
    except DefinitionError as exc:
        return list(exc.problems)
    version = done.published.version
    if done.published.created:
        text = f"Published {version} from template '{template.name}'."
        messages.success(request, text)
    else:
        messages.warning(request, f"{version} already has that content; nothing published.")
    if access.allowed(request.user, "view", version.workflow_id):
        return HttpResponseRedirect(
            reverse("admin:flows_workflow_change", args=[version.workflow_id])
        )
    return HttpResponseRedirect(reverse("admin:flows_workflowtemplate_changelist"))
