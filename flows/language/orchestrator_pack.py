"""The orchestrator seed's template pack (`templates.json`) read into Furrow's language.

The seed's templates are workflows: `{name, description, steps: [{name, action, input, retry,
requires_approval}]}`, run strictly in order. Each becomes a definition whose steps each need the
one before. Its actions map to our step types: `http` to `http` (its raw JSON `body` is our
`json`), `transform` (`input.set`) to `transform`, `condition` (`key`, `equals`/`not_equals`,
`on_false`) to `condition`, and the dotted connector actions (`ai_router.chat`, `web.search`…)
to the connector step types of the same name, which take the seed's `url`/`body` unchanged.

Pure; the service (flows/workflow_templates.py) saves what this returns, all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flows.language.errors import DefinitionError, Problem

HTTP_KEYS = ("method", "url", "headers")


@dataclass(frozen=True)
class PackTemplate:
    """One template read from a pack, ready to save as an imported template."""

    name: str
    description: str
    definition: dict[str, Any]


def read_pack(doc: Any) -> list[PackTemplate]:
    """Every template of a pack: `{"templates": [...]}` (templates.json), `{"items": [...]}`
    (what the seed's `GET /v1/templates` answers) or a bare list.

    Raises DefinitionError listing every problem, so nothing is imported from a bad pack.
    """
    items, key = _items(doc)
    problems: list[Problem] = []
    out: list[PackTemplate] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"{key}[{index}]" if key else f"[{index}]"
        template = _template(item, where, problems)
        if template is None:
            continue
        if template.name in seen:
            problems.append(Problem(f"{where}.name", f"'{template.name}' appears twice"))
        seen.add(template.name)
        out.append(template)
    if problems:
        raise DefinitionError(problems)
    if not out:
        raise DefinitionError(Problem(key, "the pack holds no templates"))
    return out


def _items(doc: Any) -> tuple[list[Any], str]:
    if isinstance(doc, list):
        return doc, ""
    if isinstance(doc, dict):
        for key in ("templates", "items"):
            if isinstance(doc.get(key), list):
                return doc[key], key
    raise DefinitionError(
        'a template pack is {"templates": [...]} (or {"items": [...]}, or a list of templates)'
    )


def _template(item: Any, where: str, problems: list[Problem]) -> PackTemplate | None:
    if not isinstance(item, dict):
        problems.append(Problem(where, "must be an object with name and steps"))
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        problems.append(Problem(f"{where}.name", "required: a non-empty string"))
        return None
    steps = item.get("steps")
    if not isinstance(steps, list) or not steps:
        problems.append(Problem(f"{where}.steps", "required: a non-empty list of steps"))
        return None
    converted: dict[str, Any] = {}
    previous: str | None = None
    for index, step in enumerate(steps):
        step_name = _step(step, previous, f"{where}.steps[{index}]", problems, converted)
        previous = step_name or previous
    description = item.get("description", "")
    definition = (
        {"description": description, "steps": converted} if description else {"steps": converted}
    )
    return PackTemplate(name, description if isinstance(description, str) else "", definition)


def _step(
    step: Any, previous: str | None, where: str, problems: list[Problem], out: dict[str, Any]
) -> str | None:
    if not isinstance(step, dict):
        problems.append(Problem(where, "must be an object with name and action"))
        return None
    name, action = step.get("name"), step.get("action")
    if not isinstance(name, str) or not name:
        problems.append(Problem(f"{where}.name", "required: a non-empty string"))
        return None
    if not isinstance(action, str) or not action:
        problems.append(Problem(f"{where}.action", "required: a non-empty string"))
        return None
    if name in out:
        problems.append(Problem(f"{where}.name", f"step '{name}' appears twice"))
        return None
    given = step.get("input", {})
    if not isinstance(given, dict):
        problems.append(Problem(f"{where}.input", "must be an object"))
        return None
    converted: dict[str, Any] = {"type": action, "with": _with(action, given)}
    if previous is not None:
        converted["needs"] = [previous]  # the seed runs its steps strictly in order
    converted.update(_retry(step.get("retry"), f"{where}.retry", problems))
    if step.get("requires_approval") is True:
        converted["requires_approval"] = True
    out[name] = converted
    return name


def _with(action: str, given: Mapping[str, Any]) -> dict[str, Any]:
    if action == "http":
        config = {key: given[key] for key in HTTP_KEYS if key in given}
        if "body" in given:
            body = given["body"]
            config["body" if isinstance(body, str) else "json"] = body
        return config
    if action == "transform":
        return {"set": dict(given.get("set") or {})}
    if action == "condition":
        keys = ("key", "equals", "not_equals", "on_false")
        return {key: given[key] for key in keys if key in given}
    return dict(given)  # connectors take url, method, headers and body as the seed sent them


def _retry(retry: Any, where: str, problems: list[Problem]) -> dict[str, Any]:
    """The seed's `{max, backoff_ms}`: 1 + max attempts, a fixed pause (≤ 0 meant 250 ms)."""
    if retry is None:
        return {}
    if not isinstance(retry, dict):
        problems.append(Problem(where, "must be an object {max, backoff_ms}"))
        return {}
    extra, backoff = retry.get("max", 0), retry.get("backoff_ms", 0)
    if not _count(extra) or not _count(backoff):
        problems.append(Problem(where, "max and backoff_ms must be whole numbers ≥ 0"))
        return {}
    if extra == 0:
        return {}
    delay = f"{backoff if backoff > 0 else 250}ms"
    return {"retry": {"max_attempts": min(extra + 1, 100), "delay": delay, "backoff": "fixed"}}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
