from __future__ import annotations

from django.apps import AppConfig


class StepsConfig(AppConfig):
    name = "steps"
    verbose_name = "Steps"

    def ready(self) -> None:
        # Their system checks and Connector save hooks register on import; every process needs them,
        # not only those that load the admin.
        from steps import connectors, health  # noqa: F401
