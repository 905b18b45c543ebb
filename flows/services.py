"""Publishing: the only writer of Workflow and WorkflowVersion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from flows.language.canonical import unified_diff
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


class VersionNotFound(LookupError):
    pass


def version_of(workflow: Workflow, number: int) -> WorkflowVersion:
    try:
        return workflow.versions.get(number=number)
    except WorkflowVersion.DoesNotExist:
        raise VersionNotFound(f"workflow '{workflow.name}' has no version {number}") from None


def diff_versions(workflow: Workflow, old: int, new: int) -> str:
    """A unified diff of versions `old` and `new` of `workflow` (their canonical YAML)."""
    before, after = version_of(workflow, old), version_of(workflow, new)
    name = workflow.name
    return unified_diff(before.definition, after.definition, f"{name} v{old}", f"{name} v{new}")


def rollback(
    workflow: Workflow, number: int, *, user: Any = None, actor: str = "system"
) -> Published:
    """Publish version `number`'s content again, as the newest version.

    History is never rewritten: the old content comes back under a new number, and runs that
    started on any version keep it. It is validated again (a step type may have changed since).
    Rolling back to content identical to the latest version writes nothing (`created=False`).
    """
    target = version_of(workflow, number)
    with transaction.atomic():
        previous = workflow.latest_version
        published = publish(target.definition, source=target.source, user=user, actor=actor)
        if published.created:
            Event.objects.create(
                workflow=workflow,
                type="workflow.rolled_back",
                actor=actor,
                data={
                    "version": published.version.number,
                    "content_of": number,
                    "replaced": previous.number if previous else None,
                },
            )
    return published
