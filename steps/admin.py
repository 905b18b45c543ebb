"""Secrets in the admin: names and descriptions are shown; a value can be written, never read."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from steps import workers
from steps.models import Secret, WorkerCluster
from steps.secrets import delete_secret, set_secret, update_secret, validate_secret_value
from steps.worker_rules import WorkerState


class SecretForm(forms.ModelForm):
    # render_value=False: the browser never receives a value, not even after a failed submit.
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        strip=False,  # a secret is exactly what was typed
        required=False,
        validators=[validate_secret_value],
        help_text="Write-only. Leave blank to keep the current value.",
    )

    class Meta:
        model = Secret
        fields = ["name", "description"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk is None and not cleaned.get("value") and "value" not in self.errors:
            self.add_error("value", "A new secret needs a value.")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ["name", "description", "updated_at", "updated_by"]
    search_fields = ["name"]
    list_select_related = ["updated_by"]
    fields = ["name", "description", "value", "created_at", "updated_at", "updated_by"]
    readonly_fields = ["created_at", "updated_at", "updated_by"]

    # Error reports (DEBUG page, mails to ADMINS) list POST data; the value must not be in them.
    @method_decorator(sensitive_post_parameters("value"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(*args, **kwargs)

    def get_readonly_fields(self, request: Any, obj: Secret | None = None) -> list[str]:
        # Templates refer to a secret by name; renaming would break them silently.
        return [*self.readonly_fields, "name"] if obj else list(self.readonly_fields)

    def save_model(self, request: Any, obj: Secret, form: SecretForm, change: bool) -> None:
        # Through the service, so the value is encrypted and the change audited like any other.
        value = form.cleaned_data.get("value") or None
        if change:
            saved = update_secret(
                obj.name, value=value, description=obj.description, user=request.user
            )
        else:
            saved = set_secret(obj.name, value, description=obj.description, user=request.user)
        obj.pk = saved.pk

    def delete_model(self, request: Any, obj: Secret) -> None:
        delete_secret(obj.name, user=request.user)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for name in queryset.values_list("name", flat=True):
            delete_secret(name, user=request.user)


from steps import resilience_admin  # noqa: F401,E402


class WorkerStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [(state.value, state.value) for state in WorkerState]

    def queryset(self, request: Any, queryset: Any) -> Any:
        if self.value() not in {state.value for state in WorkerState}:
            return queryset
        return workers.in_state(queryset, WorkerState(self.value()), timezone.now())


@admin.register(WorkerCluster)
class WorkerClusterAdmin(admin.ModelAdmin):
    """The worker registry, for looking: launchers write it (steps/workers.py). Deleting a row
    of a worker that is gone tidies the list; a live one registers again at its next heartbeat."""

    list_display = [
        "name",
        "queue_list",
        "capacity",
        "load",
        "state",
        "last_heartbeat",
        "host",
        "started_at",
    ]
    list_filter = [WorkerStateFilter, "host"]
    search_fields = ["name", "host", "queues"]
    readonly_fields = [
        "name",
        "host",
        "pid",
        "pids",
        "queues",
        "capacity",
        "load",
        "state",
        "started_at",
        "last_heartbeat",
        "stopped_at",
    ]
    fields = readonly_fields
    ordering = ["name"]

    def get_queryset(self, request: Any) -> Any:
        return workers.with_load(super().get_queryset(request))

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.display(description="queues")
    def queue_list(self, obj: WorkerCluster) -> str:
        return ", ".join(obj.queues)

    @admin.display(description="load", ordering="load")
    def load(self, obj: WorkerCluster) -> int:
        return getattr(obj, "load", 0)

    @admin.display(description="state")
    def state(self, obj: WorkerCluster) -> str:
        return workers.state(obj, timezone.now()).value
