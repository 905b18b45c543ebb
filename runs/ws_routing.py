"""WebSocket routes (orchestrator/asgi.py mounts them behind origin checks and authentication)."""

from __future__ import annotations

from django.urls import path

from runs import consumers

websocket_urlpatterns = [
    path("ws/runs/<uuid:run_id>/", consumers.RunConsumer.as_asgi(), name="ws-run"),
    path("ws/events/", consumers.EventsConsumer.as_asgi(), name="ws-events"),
]
