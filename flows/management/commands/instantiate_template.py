"""Publish a workflow from a workflow template, with parameters."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from flows import workflow_templates as service
from flows.language.errors import DefinitionError
from flows.models import WorkflowTemplate
from runs.management.commands.pause_run import acting_user, add_as_argument


def parse_param(template: WorkflowTemplate, raw: str) -> tuple[str, Any]:
    """`key=value`: a string parameter takes the text as it is; any other parameter reads it
    as JSON (`replicas=3`, `urls=["https://a"]`), falling back to the text."""
    key, separator, text = raw.partition("=")
    if not separator or not key:
        raise CommandError(f"--param {raw!r}: write NAME=VALUE")
    declared = (template.parameters.get("properties") or {}).get(key)
    if isinstance(declared, dict) and declared.get("type") == "string":
        return key, text
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


class Command(BaseCommand):
    help = (
        "Publish the definition a workflow template gives as WORKFLOW: a new workflow, or a new "
        "version of an existing one. Parameters come from --params-json and --param NAME=VALUE "
        "(which wins); the template's defaults fill in the rest. With --as, the user needs "
        "flows.add_workflow for a new workflow, or edit on an existing one."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("template", metavar="TEMPLATE", help="The template's name.")
        parser.add_argument("workflow", metavar="WORKFLOW", help="The workflow to publish.")
        parser.add_argument(
            "--param", action="append", default=[], metavar="NAME=VALUE", help="Repeatable."
        )
        parser.add_argument("--params-json", metavar="JSON", help="All parameters as an object.")
        add_as_argument(parser, "instantiates")

    def handle(self, *args: Any, **options: Any) -> None:
        template = WorkflowTemplate.objects.filter(name=options["template"]).first()
        if template is None:
            raise CommandError(f"no template named '{options['template']}'")
        parameters = self.parameters(template, options)
        user, actor = acting_user(options["username"])
        try:
            done = service.instantiate(
                template, options["workflow"], parameters, actor=actor, user=user
            )
        except service.InstantiateDenied as exc:
            raise CommandError(str(exc)) from None
        except DefinitionError as exc:
            for problem in exc.problems:
                self.stdout.write(str(problem))
            raise CommandError(f"{len(exc.problems)} problem(s); nothing published") from None
        version = done.published.version
        if done.published.created:
            self.stdout.write(f"published {version.workflow.name} v{version.number}")
        else:
            self.stdout.write(f"unchanged {version.workflow.name} v{version.number}")

    def parameters(self, template: WorkflowTemplate, options: dict[str, Any]) -> dict[str, Any]:
        parameters: dict[str, Any] = {}
        if options["params_json"]:
            try:
                parameters = json.loads(options["params_json"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--params-json is not valid JSON: {exc.msg}") from None
            if not isinstance(parameters, dict):
                raise CommandError("--params-json must be a JSON object")
        parameters.update(parse_param(template, raw) for raw in options["param"])
        return parameters
