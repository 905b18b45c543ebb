from __future__ import annotations

from rest_framework import serializers

from flows.models import Workflow, WorkflowVersion


class VersionSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="number", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = WorkflowVersion
        fields = ["workflow", "version", "content_hash", "created_at", "created_by"]


class VersionDetailSerializer(VersionSerializer):
    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "definition", "source"]


class WorkflowSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(
        source="latest_version.number", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = Workflow
        fields = ["name", "description", "version", "created_at", "updated_at"]


class WorkflowDetailSerializer(WorkflowSerializer):
    definition = serializers.JSONField(
        source="latest_version.definition", default=None, read_only=True, allow_null=True
    )

    class Meta(WorkflowSerializer.Meta):
        fields = [*WorkflowSerializer.Meta.fields, "definition"]


class PublishedSerializer(serializers.Serializer):
    """What publishing answers (flows.api builds the body; this describes it for the schema)."""

    name = serializers.CharField()
    version = serializers.IntegerField()
    content_hash = serializers.CharField()
    created = serializers.BooleanField(
        help_text="False when this content already was the latest version: nothing was published."
    )
    created_at = serializers.DateTimeField()


class RolledBackSerializer(PublishedSerializer):
    content_of = serializers.IntegerField(help_text="The version whose content was published.")
