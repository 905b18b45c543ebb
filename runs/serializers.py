from __future__ import annotations

from rest_framework import serializers

from runs.models import Event, LogLine, Run, StepRun


class StepRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepRun
        fields = [
            "name",
            "type",
            "status",
            "attempt",
            "output",
            "error",
            "started_at",
            "finished_at",
        ]


class RunSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "version",
            "status",
            "input",
            "output",
            "error",
            "source",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RunDetailSerializer(RunSerializer):
    steps = StepRunSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps"]


class EventSerializer(serializers.ModelSerializer):
    step = serializers.CharField(source="step_run.name", default=None, read_only=True)
    run = serializers.UUIDField(source="run_id", read_only=True)

    class Meta:
        model = Event
        fields = ["id", "run", "step", "type", "actor", "data", "created_at"]


class LogLineSerializer(serializers.ModelSerializer):
    step = serializers.CharField(source="step_run.name", default=None, read_only=True)

    class Meta:
        model = LogLine
        fields = ["id", "step", "attempt", "stream", "text", "created_at"]


class StartRunSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, default=dict)
