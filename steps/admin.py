"""Secrets in the admin: names and descriptions are shown; a value can be written, never read."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from steps.models import Secret
from steps.secrets import delete_secret, set_secret, update_secret, validate_secret_value


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
