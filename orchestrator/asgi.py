"""ASGI entry point for daphne: HTTP (and, as the streams arrive, WebSockets through Channels)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

from channels.routing import ProtocolTypeRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# The embedded mode has no separate web server for static files; serving them from the ASGI app
# keeps `make run` to one command (DESIGN.md, Stack notes).
django_asgi = ASGIStaticFilesHandler(get_asgi_application())

application = ProtocolTypeRouter({"http": django_asgi})
