"""Furrow's admin site. Its index is the dashboard; the workflow, run, approvals, dead-letter,
health and workers pages live under it, so they share its login, navigation and look.

The pages themselves are in each app's `pages.py`; this module only mounts them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path


class FurrowAdminSite(admin.AdminSite):
    site_header = "Furrow"
    site_title = "Furrow"
    index_title = "Dashboard"

    def get_urls(self) -> list[Any]:
        from flows import pages as flow_pages
        from runs import pages as run_pages
        from steps import pages as step_pages

        pages: list[URLPattern] = [
            *flow_pages.urls(self.admin_view),
            *run_pages.urls(self.admin_view),
            *step_pages.urls(self.admin_view),
        ]
        return pages + super().get_urls()

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        from runs.dashboard import dashboard_context

        context = {
            **self.each_context(request),
            **dashboard_context(request.user),
            "app_list": self.get_app_list(request),  # the admin's own index, below the dashboard
        }
        context.update(extra_context or {})
        return TemplateResponse(request, "furrow/dashboard.html", context)


def page_path(route: str, view: Any, name: str, wrap: Any, **kwargs: Any) -> URLPattern:
    """A page under the admin, behind its login (`wrap` is the site's `admin_view`)."""
    return path(route, wrap(view), kwargs, name=name)


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> TemplateResponse:
    """A page with the admin's chrome (navigation, user tools) around `context`."""
    site = admin.site
    return TemplateResponse(
        request, template, {**site.each_context(request), **context}, status=status
    )
