from __future__ import annotations

from rest_framework import serializers

from runs.ingest import IngestStream
from runs.models import Approval, DeadLetter, Event, LogLine, Run, StepRun


class StepRunSerializer(serializers.ModelSerializer):
    waiting_for = serializers.SerializerMethodField()
    due_at = serializers.DateTimeField(source="next_attempt_at", read_only=True, allow_null=True)
    chosen = serializers.JSONField(source="branch", read_only=True)

    class Meta:
        model = StepRun
        fields = [
            "name",
            "type",
            "status",
            "attempt",
            "output",
            "error",
            "waiting_for",
            "due_at",
            "chosen",
            "item_index",
            "item",
            "started_at",
            "finished_at",
        ]

    def get_waiting_for(self, step: StepRun) -> str | None:
        """callback, timer, subflow or items while the step waits; else null."""
        if step.status != "waiting" or not step.waiting:
            return None
        return step.waiting.get("kind")


class RunSerializer(serializers.ModelSerializer):
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    parent_run = serializers.UUIDField(
        source="parent_step.run_id", default=None, read_only=True, allow_null=True
    )

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
            "parent_run",
            "depth",
            "priority",
            "idempotency_key",
            "rerun_of",
            "deadline_at",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RunDetailSerializer(RunSerializer):
    steps = StepRunSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps"]


class EventSerializer(serializers.ModelSerializer):
    step = serializers.CharField(
        source="step_run.name", default=None, read_only=True, allow_null=True
    )
    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)

    class Meta:
        model = Event
        fields = ["id", "run", "step", "type", "actor", "data", "created_at"]


class LogLineSerializer(serializers.ModelSerializer):
    step = serializers.CharField(
        source="step_run.name", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = LogLine
        fields = ["id", "step", "attempt", "stream", "text", "created_at"]


class StartRunSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, default=dict)
    idempotency_key = serializers.CharField(
        required=False, allow_blank=False, max_length=200, default=""
    )
    priority = serializers.IntegerField(required=False, min_value=1, max_value=10, default=None)


class RerunSerializer(serializers.Serializer):
    from_step = serializers.CharField(required=False, default=None)
    only_step = serializers.CharField(required=False, default=None)
    input = serializers.JSONField(required=False, default=None)


class DeadLetterSerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id", read_only=True)
    workflow = serializers.CharField(source="run.workflow.name", read_only=True)
    step = serializers.CharField(source="step_run.name", read_only=True)
    resolved_by = serializers.CharField(
        source="resolved_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = DeadLetter
        fields = [
            "id",
            "run",
            "workflow",
            "step",
            "attempts",
            "error",
            "config",
            "status",
            "resolved_by",
            "resolved_at",
            "created_at",
        ]


class ApprovalSerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id", read_only=True)
    workflow = serializers.CharField(source="run.workflow.name", read_only=True)
    step = serializers.CharField(source="step_run.name", read_only=True)
    decided_by = serializers.CharField(
        source="decided_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = Approval
        fields = [
            "id",
            "run",
            "workflow",
            "step",
            "kind",
            "status",
            "decision",
            "approvers",
            "message",
            "form",
            "default",
            "expires_at",
            "decided_by",
            "decided_at",
            "comment",
            "data",
            "created_at",
        ]


class DecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "reject"])
    comment = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")
    data = serializers.JSONField(required=False, default=None)


# The bodies below are built by the views; these serializers describe them for the schema.


class LogPageSerializer(serializers.Serializer):
    """GET /runs/{id}/logs as JSON."""

    run = serializers.UUIDField()
    lines = LogLineSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Send as `?after=` for the next page.")


class IngestLogsSerializer(serializers.Serializer):
    """POST /runs/{id}/logs as JSON; `?step=` and `?stream=` may stand in for the fields."""

    lines = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        min_length=1,
        help_text="An item with line breaks is several lines.",
    )
    stream = serializers.ChoiceField(
        choices=[s.value for s in IngestStream],
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Default: external.",
    )
    step = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="A step of the run; none: run-level lines.",
    )


class LogsIngestedSerializer(serializers.Serializer):
    run = serializers.UUIDField()
    step = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField(help_text="0 for run-level lines and ended steps.")
    accepted = serializers.IntegerField(help_text="Lines stored; a long line counts its pieces.")
    first_id = serializers.IntegerField(allow_null=True)
    last_id = serializers.IntegerField(allow_null=True)


class WorkflowPausedSerializer(serializers.Serializer):
    name = serializers.CharField()
    paused = serializers.BooleanField()
