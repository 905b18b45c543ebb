"""Secrets: values encrypted at rest, referenced from steps as `{{ secrets.NAME }}`.

Only the Fernet token is stored; there is no plaintext column. Reading and writing values goes
through `steps.secrets` (which also records the audit events).

Also the connectors (named HTTP services) and the rows that hold across all workers: circuit
breakers, rate limit buckets and target health (`steps.guards`, `steps.health`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from steps.executors.connector import CONNECTOR_NAME_PATTERN, ConnectorError, ConnectorSpec
from steps.resilience_rules import BreakerState

# A template identifier, so `{{ secrets.NAME }}` works without quoting.
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
validate_secret_name = RegexValidator(
    SECRET_NAME_PATTERN,
    "a secret name starts with a letter or underscore, then letters, digits or underscores "
    "(at most 100 characters)",
)


class Secret(models.Model):
    # Unique, which is also the index for the lookups by name (API, templates, get_values).
    name = models.CharField(max_length=100, unique=True, validators=[validate_secret_name])
    description = models.TextField(blank=True)
    ciphertext = models.TextField(help_text="Fernet token of the value; never shown.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# Connectors, circuit breakers, rate limits and health checks (steps.connectors, steps.guards,
# steps.health). Breakers, buckets and health rows are written only by those modules.


validate_connector_name = RegexValidator(
    CONNECTOR_NAME_PATTERN,
    "a connector name is lowercase letters, digits and underscores, starting with a letter "
    "(at most 50 characters)",
)


class Connector(models.Model):
    """A named HTTP service; steps call its operations as `type: <name>.<operation>`.

    A row overrides a preset or a FURROW_CONNECTORS entry of the same name, entirely. `auth`
    names a secret; its value is read for each attempt and never stored here.
    """

    # Unique, which is also the index for the lookup by name.
    name = models.CharField(max_length=50, unique=True, validators=[validate_connector_name])
    description = models.TextField(blank=True)
    base_url = models.CharField(max_length=500, help_text="e.g. https://api.example.com")
    headers = models.JSONField(
        default=dict, blank=True, help_text='Sent with every call: {"Accept": "application/json"}'
    )
    auth = models.JSONField(
        null=True,
        blank=True,
        help_text='{"scheme": "bearer" | "basic" | "header", "secret": "SECRET_NAME", '
        '"header": "X-Api-Key" (header), "username": "..." (basic)}',
    )
    health_url = models.CharField(
        max_length=500, blank=True, help_text="GET every FURROW_HEALTH_INTERVAL; blank: none"
    )
    operations = models.JSONField(
        default=dict,
        help_text='{"chat": {"method": "POST", "path": "/v1/chat", "description": "...", '
        '"with": {"properties": {...}, "required": [...]}}}',
    )
    timeout = models.FloatField(default=30.0, help_text="Seconds a call may take.")
    rate_limit = models.FloatField(
        null=True, blank=True, help_text="Requests per second across all workers; blank: none."
    )
    circuit_breaker = models.JSONField(
        null=True,
        blank=True,
        help_text='Default for its steps: {"failure_threshold": 5, "success_threshold": 2, '
        '"open_timeout": 60, "on_open": "fail" | "defer"}',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def definition(self) -> dict[str, Any]:
        """The row as a connector definition (the shape FURROW_CONNECTORS uses)."""
        definition: dict[str, Any] = {
            "description": self.description,
            "base_url": self.base_url,
            "headers": self.headers or {},
            "auth": self.auth or None,
            "health_url": self.health_url,
            "operations": self.operations,
            "timeout": self.timeout,
            "rate_limit": self.rate_limit,
            "circuit_breaker": self.circuit_breaker or None,
            "enabled": self.enabled,
        }
        return definition

    def spec(self) -> ConnectorSpec:
        """Raises ConnectorError when the row does not make a usable connector."""
        return ConnectorSpec.from_mapping(self.name, self.definition(), "database")

    def clean(self) -> None:
        super().clean()
        try:
            self.spec()
        except ConnectorError as exc:
            field = exc.key if exc.key in {f.name for f in self._meta.fields} else None
            raise ValidationError({field: str(exc)} if field else str(exc)) from None


class CircuitBreaker(models.Model):
    """One target's breaker (`http:<host>:<port>`, `connector:<name>`), shared by all workers."""

    # Unique, which is also the index for the lookup by key on every guarded call.
    key = models.CharField(max_length=300, unique=True)
    state = models.CharField(
        max_length=16,
        choices=[(state.value, state.value.replace("_", " ")) for state in BreakerState],
        default=BreakerState.CLOSED.value,
    )
    failures = models.PositiveIntegerField(default=0)
    successes = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    last_failure = models.TextField(blank=True, help_text="The error of the last counted failure.")
    last_failure_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class RateLimit(models.Model):
    """A token bucket shared by all workers: `tokens` as of `updated_at`, refilled at `rate`/s."""

    # Unique, which is also the index for the locked lookup by key on every limited call.
    key = models.CharField(max_length=300, unique=True)
    rate = models.FloatField(help_text="Tokens (requests) per second.")
    burst = models.FloatField(help_text="At most this many tokens are saved up.")
    tokens = models.FloatField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.rate:g}/s)"


class HealthStatus(models.TextChoices):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class TargetHealth(models.Model):
    """The last health check of a target (same keys as the breakers): Spuds' health checks."""

    # Unique, which is also the index for the guard's and the API's lookup by key.
    key = models.CharField(max_length=300, unique=True)
    url = models.CharField(max_length=1000, help_text="GET this; status >= 400 is unhealthy.")
    status = models.CharField(
        max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN
    )
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(
        null=True, blank=True, help_text="A step's last successful call to this target."
    )
    next_check_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]
        indexes = [
            # The tick loop's due targets: WHERE next_check_at <= now ORDER BY next_check_at.
            models.Index(fields=["next_check_at"], name="targethealth_due"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


# The worker registry (steps.workers): one row per worker cluster launcher (`manage.py worker`,
# or `serve` for its own cluster), written only by steps.workers.


class WorkerCluster(models.Model):
    # Unique: the registry's key, and the index of the lookups by name (API detail, heartbeats).
    name = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField(help_text="The launcher's process id.")
    pids = models.JSONField(
        default=list, blank=True, help_text="Process ids of its Django-Q2 clusters (one a queue)."
    )
    queues = models.JSONField(default=list, help_text="The queues it serves.")
    capacity = models.PositiveIntegerField(
        help_text="Steps it can run at once: Django-Q2 workers per queue, times its queues."
    )
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    stopped_at = models.DateTimeField(
        null=True, blank=True, help_text="Set by a clean shutdown; a restart clears it."
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "worker"

    def __str__(self) -> str:
        return self.name
