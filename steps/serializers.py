"""Secret API bodies. The value is write-only: no serializer here has a way to read it back."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from steps.models import Secret, validate_secret_name
from steps.secrets import validate_secret_value


class SecretSerializer(serializers.ModelSerializer):
    """What the API shows of a secret: everything but its value."""

    updated_by = serializers.CharField(
        source="updated_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = Secret
        fields = ["name", "description", "created_at", "updated_at", "updated_by"]


class SecretValueField(serializers.CharField):
    """A secret value: a string exactly as sent (no trimming), never rendered back."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            write_only=True, trim_whitespace=False, validators=[validate_secret_value], **kwargs
        )

    def to_internal_value(self, data: Any) -> str:
        # DRF's CharField would turn 123 into "123"; a secret sent as a number is a client bug.
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class _Strict(serializers.Serializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # An unknown field is refused rather than ignored: `{"valeu": ...}` must not look like success.
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(unknown, "unknown field"))
        return attrs


class SecretCreateSerializer(_Strict):
    name = serializers.CharField(trim_whitespace=False, validators=[validate_secret_name])
    value = SecretValueField()
    description = serializers.CharField(required=False, allow_blank=True, default="")


class SecretUpdateSerializer(_Strict):
    value = SecretValueField(required=False)
    description = serializers.CharField(required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if not attrs:
            raise serializers.ValidationError("send value and/or description")
        return attrs
