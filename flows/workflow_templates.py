"""Workflow templates: the only writer of WorkflowTemplate, and instantiation into workflows.

A template is a definition body (YAML) with `(( name ))` placeholders and a JSON Schema of its
parameters (flows/language/placeholders.py). Built-ins come from flows/template_pack/*.yaml and
are synced on every migrate; they are read-only. Users add their own, or import the
orchestrator seed's pack (flows/language/orchestrator_pack.py). Instantiating fills in the
parameters and publishes through flows/services.publish, like any definition.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction

from flows import access
from flows.language.errors import DefinitionError, Problem
from flows.language.orchestrator_pack import read_pack
from flows.language.parse import load_document
from flows.language.placeholders import body_problems, check_parameters, substitute
from flows.language.validate import validate
from flows.models import Workflow, WorkflowTemplate
from flows.services import Published, publish
from runs.models import Event
from steps.registry import LANGUAGE_CHECKS, step_type_schemas

log = logging.getLogger(__name__)

PACK_DIR = Path(__file__).resolve().parent / "template_pack"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"
RESERVED_NAMES = frozenset({"import"})  # POST /api/v1/templates/import
Source = WorkflowTemplate.Source


class TemplateReadOnly(Exception):
    """A built-in template cannot be changed or deleted (copy it as a user template)."""


class TemplateNameTaken(Exception):
    pass


class InstantiateDenied(PermissionError):
    """The user may not create this workflow, or may not publish a new version of it."""


@dataclass(frozen=True)
class Instantiated:
    published: Published
    workflow_created: bool
    """True when the workflow did not exist before."""


def as_yaml(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def load_body(text: str) -> Any:
    """A template body parsed, within the definition size limit. Raises DefinitionError with
    paths under `definition`."""
    try:
        return load_document(text, fmt="yaml", max_bytes=settings.FURROW["MAX_DEFINITION_BYTES"])
    except DefinitionError as exc:
        raise DefinitionError([Problem("definition", p.message) for p in exc.problems]) from None


def template_problems(template: WorkflowTemplate) -> list[Problem]:
    """Every problem of a template about to be saved; empty when it may be saved.

    Beyond its placeholders: when its defaults cover every parameter, the definition it would
    give is validated too, so a broken template is caught when it is written, not when used.
    """
    problems = _metadata_problems(template)
    try:
        doc = load_body(template.body)
    except DefinitionError as exc:
        return [*problems, *exc.problems]
    found = body_problems(doc, template.parameters)
    if not found:
        found = _default_instance_problems(template, doc)
    return sorted({*problems, *found})


def _metadata_problems(template: WorkflowTemplate) -> list[Problem]:
    problems = []
    if not re.fullmatch(NAME_PATTERN, template.name or ""):
        problems.append(
            Problem("name", "lowercase letters, digits, - and _ (at most 100), not empty")
        )
    elif template.name in RESERVED_NAMES:
        problems.append(Problem("name", f"'{template.name}' is reserved (an API route)"))
    if not isinstance(template.tags, list) or not all(
        isinstance(tag, str) and re.fullmatch(TAG_PATTERN, tag) for tag in template.tags
    ):
        problems.append(Problem("tags", "a list of lowercase words (letters, digits, - and _)"))
    if template.category and not re.fullmatch(TAG_PATTERN, template.category):
        problems.append(Problem("category", "a lowercase word (letters, digits, - and _)"))
    return problems


def _default_instance_problems(template: WorkflowTemplate, doc: Any) -> list[Problem]:
    try:
        values = check_parameters(template.parameters, {})
    except DefinitionError:
        return []  # a required parameter without a default: only known when instantiated
    try:
        definition = render(template, values, template.name or "template", doc=doc)
    except DefinitionError as exc:
        return list(exc.problems)
    return [
        Problem(f"definition.{p.path}" if p.path else "definition", p.message)
        for p in validate(definition, step_type_schemas(), LANGUAGE_CHECKS)
    ]


def render(
    template: WorkflowTemplate, values: dict[str, Any], workflow: str, *, doc: Any = None
) -> dict[str, Any]:
    """The definition `template` gives for already checked `values`, named `workflow`."""
    doc = load_body(template.body) if doc is None else doc
    definition = substitute(doc, values)
    if not isinstance(definition, dict):
        raise DefinitionError(Problem("definition", "must be a mapping (steps and the rest)"))
    return {"name": workflow, **{k: v for k, v in definition.items() if k != "name"}}


# Writing


def save_template(
    template: WorkflowTemplate, *, actor: str = "system", user: Any = None
) -> WorkflowTemplate:
    """Validate and save a user's (or an imported) template; records template.created/changed.

    Raises DefinitionError listing every problem (nothing is written), TemplateReadOnly for a
    built-in and TemplateNameTaken when another template has the name.
    """
    if template.pk and _stored_source(template) == Source.BUILTIN:
        raise TemplateReadOnly(f"template '{template.name}' is built in and read-only")
    if template.source == Source.BUILTIN:
        raise TemplateReadOnly("built-in templates come only from flows/template_pack")
    problems = template_problems(template)
    if problems:
        raise DefinitionError(problems)
    with transaction.atomic():
        clash = WorkflowTemplate.objects.filter(name=template.name).exclude(pk=template.pk)
        if clash.exists():
            raise TemplateNameTaken(f"a template named '{template.name}' already exists")
        created = template.pk is None
        if created and template.created_by is None and _person(user):
            template.created_by = user
        template.save()
        kind = "template.created" if created else "template.changed"
        Event.objects.create(type=kind, actor=actor, data=_described(template))
    return template


def _stored_source(template: WorkflowTemplate) -> str | None:
    rows = WorkflowTemplate.objects.filter(pk=template.pk)
    return rows.values_list("source", flat=True).first()


def delete_template(template: WorkflowTemplate, *, actor: str = "system") -> None:
    """Delete a user's or an imported template. Raises TemplateReadOnly for a built-in.
    Workflows made from it keep their versions."""
    if template.is_builtin:
        raise TemplateReadOnly(f"template '{template.name}' is built in and cannot be deleted")
    with transaction.atomic():
        data = _described(template)
        template.delete()
        Event.objects.create(type="template.deleted", actor=actor, data=data)


def _described(template: WorkflowTemplate) -> dict[str, Any]:
    return {"template": template.name, "source": template.source}


def _person(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)


# Instantiating


def may_instantiate(user: Any, workflow_name: str) -> bool:
    """A new workflow needs flows.add_workflow; a new version of an existing one needs edit on
    it (flows/access.py). `user` None is a trusted caller (a command without --as)."""
    if user is None:
        return True
    workflow_id = Workflow.objects.filter(name=workflow_name).values_list("id", flat=True).first()
    if workflow_id is None:
        return bool(user.is_active and (user.is_superuser or user.has_perm("flows.add_workflow")))
    return access.allowed(user, "edit", workflow_id)


def instantiate(
    template: WorkflowTemplate,
    workflow_name: str,
    parameters: Any,
    *,
    actor: str = "system",
    user: Any = None,
) -> Instantiated:
    """Publish the definition `template` gives with `parameters` as workflow `workflow_name`:
    a new workflow, or a new version of an existing one.

    Raises InstantiateDenied when `user` may not (checked first, so nothing leaks through the
    validation errors), DefinitionError naming each problem (`parameters.urls[0]`,
    `steps.probe.with.url`); nothing is written then. Records workflow.instantiated with the
    actor, the template and the parameters, in the publishing transaction.
    """
    if not may_instantiate(user, workflow_name):
        raise InstantiateDenied(
            f"you may not publish workflow '{workflow_name}' (a new workflow needs the add "
            "permission, a new version of an existing one edit on it)"
        )
    values = check_parameters(template.parameters, parameters)
    definition = render(template, values, workflow_name)
    with transaction.atomic():
        existed = Workflow.objects.filter(name=workflow_name).exists()
        published = publish(definition, source=as_yaml(definition), user=user, actor=actor)
        if published.created:
            Event.objects.create(
                workflow=published.version.workflow,
                type="workflow.instantiated",
                actor=actor,
                data={
                    "template": template.name,
                    "version": published.version.number,
                    "parameters": values,
                },
            )
    return Instantiated(published, workflow_created=not existed)


# The built-in pack


def builtin_templates() -> list[WorkflowTemplate]:
    """The pack's templates, unsaved, read from flows/template_pack/*.yaml.

    A pack file is two YAML documents: the template's metadata and parameters, then `---` and
    the definition body, kept as written (comments too).
    """
    return [read_pack_file(path) for path in sorted(PACK_DIR.glob("*.yaml"))]


def read_pack_file(path: Path) -> WorkflowTemplate:
    text = path.read_text(encoding="utf-8")
    head, separator, body = text.partition("\n---\n")
    if not separator:
        raise ValueError(f"{path.name}: no '---' line between the metadata and the definition")
    meta = yaml.safe_load(head) or {}
    return WorkflowTemplate(
        name=meta.get("name", path.stem),
        title=meta.get("title", ""),
        description=meta.get("description", "").strip(),
        category=meta.get("category", ""),
        tags=meta.get("tags", []),
        parameters=meta.get("parameters", {}),
        body=body.lstrip("\n"),
        source=Source.BUILTIN,
    )


FIELDS = ("title", "description", "category", "tags", "parameters", "body")


def sync_builtins() -> dict[str, list[str]]:
    """Make the database's built-ins the pack's: add new ones, update changed ones, delete
    those no longer in the pack. Idempotent. A user template holding a built-in's name is left
    alone (and the built-in skipped, with a warning)."""
    done: dict[str, list[str]] = {"added": [], "updated": [], "deleted": [], "skipped": []}
    pack = builtin_templates()
    with transaction.atomic():
        existing = {t.name: t for t in WorkflowTemplate.objects.select_for_update()}
        for template in pack:
            _sync_one(template, existing.get(template.name), done)
        names = {t.name for t in pack}
        stale = [n for n, t in existing.items() if t.is_builtin and n not in names]
        WorkflowTemplate.objects.filter(name__in=stale, source=Source.BUILTIN).delete()
        done["deleted"] = stale
    return done


def _sync_one(
    template: WorkflowTemplate, row: WorkflowTemplate | None, done: dict[str, list[str]]
) -> None:
    if row is None:
        template.save()
        done["added"].append(template.name)
    elif not row.is_builtin:
        log.warning(
            "built-in template %r skipped: a %s template has its name", row.name, row.source
        )
        done["skipped"].append(template.name)
    elif any(getattr(row, f) != getattr(template, f) for f in FIELDS):
        for field in FIELDS:
            setattr(row, field, getattr(template, field))
        row.save(update_fields=[*FIELDS, "updated_at"])
        done["updated"].append(template.name)


# Importing the orchestrator seed's pack


@dataclass(frozen=True)
class Imported:
    template: WorkflowTemplate
    outcome: str
    """created, updated or unchanged."""


def import_pack(doc: Any, *, actor: str = "system", user: Any = None) -> list[Imported]:
    """Save every template of an orchestrator-seed pack (templates.json) as an imported
    template, updating one of the same name. All or nothing: DefinitionError lists every problem
    of the pack (its structure, each definition, a name held by a built-in) and nothing is
    written."""
    pack = read_pack(doc)
    candidates: list[tuple[WorkflowTemplate, WorkflowTemplate | None]] = []
    problems: list[Problem] = []
    rows = {t.name: t for t in WorkflowTemplate.objects.filter(name__in=[p.name for p in pack])}
    for item in pack:
        candidate = WorkflowTemplate(
            name=item.name,
            title=item.name.replace("_", " ").replace("-", " ").capitalize(),
            description=item.description,
            category="imported",
            tags=["orchestrator"],
            parameters={"type": "object", "properties": {}},
            body=as_yaml(item.definition),
            source=Source.IMPORTED,
        )
        row = rows.get(item.name)
        if row is not None and row.is_builtin:
            problems.append(Problem(f"{item.name}.name", "a built-in template has this name"))
        problems += [
            Problem(f"{item.name}.{p.path}" if p.path else item.name, p.message)
            for p in template_problems(candidate)
        ]
        candidates.append((candidate, row))
    if problems:
        raise DefinitionError(problems)
    with transaction.atomic():
        return [_import_one(candidate, row, actor, user) for candidate, row in candidates]


def _import_one(
    candidate: WorkflowTemplate, row: WorkflowTemplate | None, actor: str, user: Any
) -> Imported:
    if row is None:
        candidate.created_by = user if _person(user) else None
        candidate.save()
        outcome = "created"
    else:
        changed = [f for f in ("description", "body") if getattr(row, f) != getattr(candidate, f)]
        if not changed and row.source == Source.IMPORTED:
            return Imported(row, "unchanged")
        for field in (*changed, "source"):
            setattr(row, field, getattr(candidate, field))
        row.save(update_fields=[*changed, "source", "updated_at"])
        candidate, outcome = row, "updated"
    Event.objects.create(
        type="template.imported", actor=actor, data={**_described(candidate), "outcome": outcome}
    )
    return Imported(candidate, outcome)
