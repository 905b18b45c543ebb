from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FlowsConfig(AppConfig):
    name = "flows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        post_migrate.connect(sync_builtin_templates, sender=self)


def sync_builtin_templates(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After every migrate (and test database setup): the built-in workflow templates are the
    ones in flows/template_pack, added or updated in place (flows/workflow_templates.py)."""
    from flows.workflow_templates import sync_builtins

    migrated = kwargs.get("apps")
    try:
        if migrated is not None:
            migrated.get_model("flows", "WorkflowTemplate")
    except LookupError:
        return  # migrated back to before templates existed
    if using == "default":
        sync_builtins()
