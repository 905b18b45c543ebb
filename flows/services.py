"""Publishing: the only writer of Workflow and WorkflowVersion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from flows.language.parse import load_document
from flows.language.validate import compile_definition, content_hash
from flows.models import Workflow, WorkflowVersion
from runs.models import Event
from steps.registry import LANGUAGE_CHECKS, step_type_schemas


@dataclass(frozen=True)
class Published:
    version: WorkflowVersion
    created: bool
    """False when the definition was identical to the latest version (nothing new was written)."""


def parse_definition(data: bytes | str, *, fmt: str = "auto") -> Any:
    """Parse a definition a user sent, within the configured size limit."""
    return load_document(data, fmt=fmt, max_bytes=settings.FURROW["MAX_DEFINITION_BYTES"])


def publish(
    definition: Any, *, source: str = "", user: Any = None, actor: str = "system"
) -> Published:
    """Validate `definition` (a parsed document) and publish it as the workflow's next version.

    Raises DefinitionError listing every problem; nothing is written then. Publishing content
    identical to the latest version returns that version with `created=False`.
    """
    spec = compile_definition(definition, step_type_schemas(), LANGUAGE_CHECKS)
    digest = content_hash(definition)
    with transaction.atomic():
        workflow, _ = Workflow.objects.select_for_update().get_or_create(name=spec.name)
        latest = workflow.latest_version
        if latest is not None and latest.content_hash == digest:
            return Published(latest, created=False)
        version = WorkflowVersion.objects.create(
            workflow=workflow,
            number=(latest.number if latest else 0) + 1,
            definition=definition,
            source=source,
            content_hash=digest,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        workflow.latest_version = version
        workflow.description = spec.description
        workflow.save(update_fields=["latest_version", "description", "updated_at"])
        Event.objects.create(
            workflow=workflow,
            type="workflow.published",
            actor=actor,
            data={"version": version.number, "content_hash": digest},
        )
    return Published(version, created=True)
