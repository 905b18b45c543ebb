"""The catalogue: workflows and their immutable, numbered versions."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from flows.language.spec import WorkflowSpec
from flows.language.validate import build_spec


class Workflow(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    latest_version = models.ForeignKey(
        "WorkflowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    paused = models.BooleanField(
        default=False, help_text="New and queued runs wait until the workflow is resumed."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("run_workflow", "Can start and control runs of every workflow"),
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowVersion(models.Model):
    """One published definition. Never changed after it is written; runs pin to it."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    source = models.TextField(blank=True, help_text="The text as it was published (YAML or JSON).")
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            # Also the index for "versions of a workflow, newest first".
            models.UniqueConstraint(fields=["workflow", "number"], name="unique_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.name} v{self.number}"

    @property
    def spec(self) -> WorkflowSpec:
        return compiled_spec(self.content_hash, self.definition)


_SPECS: dict[str, WorkflowSpec] = {}
_SPECS_LIMIT = 512


def compiled_spec(content_hash: str, definition: dict) -> WorkflowSpec:
    """A version's compiled spec, cached per process by content: the same content always compiles
    to the same spec, so an entry never goes stale."""
    spec = _SPECS.get(content_hash)
    if spec is None:
        if len(_SPECS) >= _SPECS_LIMIT:
            _SPECS.clear()
        spec = _SPECS[content_hash] = build_spec(definition)
    return spec


class Trigger(models.Model):
    """Something that starts runs of a workflow on its own: a cron schedule, a webhook, or
    another workflow's run ending. Changed only through flows/triggers.py, which validates."""

    class Kind(models.TextChoices):
        CRON = "cron"
        WEBHOOK = "webhook"
        WORKFLOW = "workflow", "workflow completion"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="triggers")
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    input = models.JSONField(
        default=dict,
        blank=True,
        help_text="The run's input; strings may be templates over the trigger's context "
        "(webhook: payload, headers; workflow: run; cron: fire_time).",
    )
    # cron
    cron = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    missed = models.CharField(
        max_length=10,
        choices=[("skip", "skip missed fires"), ("run_once", "run once for missed fires")],
        default="skip",
    )
    next_fire_at = models.DateTimeField(null=True, blank=True)
    # webhook
    slug = models.SlugField(max_length=100, unique=True, null=True, blank=True)
    auth = models.CharField(
        max_length=10,
        choices=[("hmac", "HMAC-SHA256 signature"), ("token", "secret token")],
        default="hmac",
    )
    secret = models.CharField(
        max_length=100, blank=True, help_text="The name of the Secret holding the key or token."
    )
    # workflow completion
    after_workflow = models.ForeignKey(
        Workflow,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="downstream_triggers",
    )
    on_statuses = models.JSONField(default=list, blank=True)

    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    fires = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workflow__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "name"], name="unique_trigger_name"),
        ]
        indexes = [
            # The tick's question: enabled cron triggers due by now.
            models.Index(fields=["kind", "enabled", "next_fire_at"], name="trigger_due"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.name}/{self.name} ({self.kind})"


class WorkflowGrant(models.Model):
    """What one user or group may do with one workflow (flows/access.py reads these).

    Roles include the ones below them: edit > run > view; approve > view.
    """

    class Role(models.TextChoices):
        VIEW = "view", "view its versions, runs, logs and events"
        RUN = "run", "view, and start, cancel, pause, resume and rerun runs"
        EDIT = "edit", "run, and publish, roll back, pause it and change its triggers"
        APPROVE = "approve", "view, and decide approvals that name no approvers"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="workflow_grants",
    )
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="workflow_grants",
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow__name", "role"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="grant_user_xor_group",
            ),
            models.UniqueConstraint(fields=["workflow", "user", "role"], name="unique_user_grant"),
            models.UniqueConstraint(
                fields=["workflow", "group", "role"], name="unique_group_grant"
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{who} may {self.role} {self.workflow}"


class WorkflowTemplate(models.Model):
    """A reusable definition with parameters: instantiating it publishes a workflow. Changed only
    through flows/workflow_templates.py, which validates the body and its `(( name ))`
    placeholders (flows/language/placeholders.py)."""

    class Source(models.TextChoices):
        BUILTIN = "builtin", "built-in"
        USER = "user"
        IMPORTED = "imported"

    name = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    category = models.SlugField(max_length=50, blank=True)
    tags = models.JSONField(default=list, blank=True, help_text="A list of lowercase words.")
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text="JSON Schema of an object: each property is a parameter, with its default.",
    )
    body = models.TextField(
        help_text="The definition as YAML, with (( name )) placeholders for the parameters."
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.USER)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The list's filters: ?source= and ?category=.
            models.Index(fields=["source", "category"], name="template_source_category"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.source == self.Source.BUILTIN
