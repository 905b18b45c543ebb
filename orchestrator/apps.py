"""The admin, with Furrow's site: a dashboard for its index and the HTMX pages beside the models."""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class FurrowAdminConfig(AdminConfig):
    default_site = "orchestrator.admin_site.FurrowAdminSite"
