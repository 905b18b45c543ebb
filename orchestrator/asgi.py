"""ASGI entry point for daphne: HTTP through Django, WebSockets through Channels."""

# The environment must be set before Django and Channels are imported.
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# Database connections come from a bounded pool in this process (orchestrator/env.py says why).
# Only for the settings read below: a process started from here (or from a test run that imported
# this module) is no web process, and a pool inherited across a fork hangs.
_web_flag = os.environ.get("FURROW_WEB_PROCESS")
os.environ.setdefault("FURROW_WEB_PROCESS", "1")

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# The embedded mode has no separate web server for static files; serving them from the ASGI app
# keeps `make run` to one command (DESIGN.md, Stack notes).
django_asgi = ASGIStaticFilesHandler(get_asgi_application())
if _web_flag is None:
    del os.environ["FURROW_WEB_PROCESS"]

# The consumers import models, so only after get_asgi_application() has set Django up.
from runs import ws_routing

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        # A browser sends cookies with a cross-site WebSocket handshake: refusing foreign origins
        # is what keeps another site from riding a logged-in user's session.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(ws_routing.websocket_urlpatterns))
        ),
    }
)
