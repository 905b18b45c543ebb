"""Query parameters of the secret, circuit breaker and target health lists (steps/api.py,
steps/resilience_api.py), as django-filter FilterSets: a value a filter cannot take is a 400
naming the parameter."""

from __future__ import annotations

import django_filters

from orchestrator.filters import contains, one_of
from steps.models import CircuitBreaker, HealthStatus, Secret, TargetHealth
from steps.resilience_rules import BreakerState

TARGET_HELP = "Part of the target's key, such as `connector:` or `api.example.com`."


class SecretFilter(django_filters.FilterSet):
    """`GET /api/v1/secrets`."""

    search = contains("name", "description", help_text="Words in the name or description.")

    class Meta:
        model = Secret
        fields: list[str] = []


class CircuitBreakerFilter(django_filters.FilterSet):
    """`GET /api/v1/circuit-breakers`."""

    state = one_of([state.value for state in BreakerState])
    target = contains("key", help_text=TARGET_HELP)

    class Meta:
        model = CircuitBreaker
        fields: list[str] = []


class TargetHealthFilter(django_filters.FilterSet):
    """`GET /api/v1/health`."""

    status = one_of(HealthStatus.values)
    target = contains("key", help_text=TARGET_HELP)

    class Meta:
        model = TargetHealth
        fields: list[str] = []
