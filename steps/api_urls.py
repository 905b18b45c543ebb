"""Routes for connectors, circuit breakers and target health; included under /api/v1/."""

from __future__ import annotations

from django.urls import path

from steps import resilience_api as api

urlpatterns = [
    path("connectors", api.ConnectorList.as_view(), name="connector-list"),
    path("connectors/<str:name>", api.ConnectorDetail.as_view(), name="connector-detail"),
    path("circuit-breakers", api.CircuitBreakerList.as_view(), name="circuit-breaker-list"),
    path(
        "circuit-breakers/<str:key>/reset",
        api.CircuitBreakerReset.as_view(),
        name="circuit-breaker-reset",
    ),
    path("health", api.HealthList.as_view(), name="target-health-list"),
    path("health/<str:key>", api.HealthDetail.as_view(), name="target-health-detail"),
]
