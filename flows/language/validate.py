"""Validate a definition and compile it to a WorkflowSpec.

Validation is a JSON Schema check (structure) followed by semantic checks a schema cannot express:
step types and their `with`, unknown `needs`, cycles, template syntax and what templates read.
Every problem is reported, each with its path, so a user fixes them all in one go.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jinja2 import TemplateSyntaxError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from flows.language.durations import parse_duration
from flows.language.errors import DefinitionError, Problem, format_path
from flows.language.graph import ancestors, find_cycle, topological_order
from flows.language.schema import (
    NAME_PATTERN,
    QUEUE_PATTERN,
    SHELL_SHORTHANDS,
    STEP_NAME_PATTERN,
    WORKFLOW,
)
from flows.language.spec import (
    DEFAULT_QUEUE,
    Backoff,
    ForEach,
    Join,
    OnFailure,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
)
from flows.language.templates import (
    CONTEXT_ROOTS,
    check_syntax,
    is_template,
    references,
    template_strings,
)

StepSchemas = Mapping[str, Mapping[str, Any]]
"""Step type name -> JSON Schema of its `with`."""

DEFAULT_PARALLELISM = 10
BRANCH_KEYS = ("then", "else")
"""Keys of a condition's `with` that name successors."""


@dataclass(frozen=True)
class Checks:
    """Checks the language cannot make itself: they need the executors (Lua, JMESPath...)."""

    config: Mapping[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]] = field(
        default_factory=dict
    )
    """Step type -> function returning (key path, message) problems of a step's `with`."""
    lua: Callable[[str], str | None] | None = None
    """Lua source -> its syntax error, or None."""
    raw_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Step type -> keys of its `with` the engine does not render (Lua source, a transform's own
    template): not checked as templates here."""


@cache
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def _validator_for(schema: Mapping[str, Any]) -> Draft202012Validator:
    return _validator(json.dumps(schema, sort_keys=True))


def validate(doc: Any, step_schemas: StepSchemas, checks: Checks | None = None) -> list[Problem]:
    """Every problem in `doc`, sorted by path; an empty list means it compiles."""
    problems = list(_schema_problems(_validator_for(WORKFLOW), doc, ()))
    if isinstance(doc, dict):
        problems += _input_schema_problems(doc.get("input"))
        steps = doc.get("steps")
        if isinstance(steps, dict):
            problems += _step_problems(steps, step_schemas, checks or Checks())
    return sorted(set(problems))


def compile_definition(
    doc: Any, step_schemas: StepSchemas, checks: Checks | None = None
) -> WorkflowSpec:
    """The WorkflowSpec of a valid definition; raises DefinitionError listing every problem."""
    problems = validate(doc, step_schemas, checks)
    if problems:
        raise DefinitionError(problems)
    return build_spec(doc)


def build_spec(doc: Mapping[str, Any]) -> WorkflowSpec:
    """Compile a definition that `validate` accepted (stored versions are; this skips the checks)."""
    defaults = doc.get("defaults", {})
    steps = doc["steps"]
    order = topological_order({name: step.get("needs", []) for name, step in steps.items()})
    hooked = _hook_guards(steps)
    specs = tuple(
        _step_spec(name, {**steps[name], **hooked.get(name, {})}, defaults, position)
        for position, name in enumerate(order)
    )
    concurrency = doc.get("concurrency", {})
    return WorkflowSpec(
        name=doc["name"],
        description=doc.get("description", ""),
        input_schema=doc.get("input", {"type": "object"}),
        steps=specs,
        max_runs=concurrency.get("max_runs"),
        max_parallel_steps=concurrency.get("max_parallel_steps"),
        priority=doc.get("priority", 5),
        deadline=parse_duration(doc["deadline"]) if "deadline" in doc else None,
    )


def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(doc: Any) -> str:
    """Identity of a definition's content: key order and formatting do not change it."""
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def step_config(step: Mapping[str, Any]) -> dict[str, Any]:
    """A step's `with`, with the shell shorthands (`run`, `argv`, `env` at step level) folded in."""
    config = dict(step.get("with", {}))
    for key in SHELL_SHORTHANDS:
        if key in step:
            config[key] = step[key]
    return config


def _step_spec(
    name: str, step: Mapping[str, Any], defaults: Mapping[str, Any], position: int
) -> StepSpec:
    # A person's decision is not bounded by the workflow's default step timeout: an approval
    # waits for ever unless it sets its own.
    timeout = step.get("timeout", None if step["type"] == "approval" else defaults.get("timeout"))
    breaker = step.get("circuit_breaker")
    if breaker is not None and "open_timeout" in breaker:
        breaker = {**breaker, "open_timeout": parse_duration(breaker["open_timeout"])}
    return StepSpec(
        name=name,
        type=step["type"],
        needs=tuple(step.get("needs", ())),
        config=step_config(step),
        retry=_retry_policy({**defaults.get("retry", {}), **step.get("retry", {})}),
        timeout=parse_duration(timeout) if timeout is not None else None,
        when=step.get("when"),
        on_failure=OnFailure(step.get("on_failure", defaults.get("on_failure", "fail"))),
        position=position,
        join=Join(step.get("join", "all_succeeded")),
        for_each=_for_each(step),
        circuit_breaker=breaker,
        on_unhealthy=step.get("on_unhealthy"),
        hooks=step.get("hooks", {}),
        dead_letter=step.get("dead_letter", defaults.get("dead_letter", False)),
        queue=step.get("queue", defaults.get("queue", DEFAULT_QUEUE)),
        requires_approval=_gate(step.get("requires_approval")),
        approval_timeout=(
            parse_duration(step["approval_timeout"]) if "approval_timeout" in step else None
        ),
    )


def _gate(raw: Any) -> Mapping[str, Any] | None:
    if raw is True:
        return {}
    return raw if isinstance(raw, dict) else None


HOOK_STATUS = {"on_failure": "failed", "on_success": "succeeded"}


def _hook_guards(steps: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A step a hook runs waits for the hooked step to end and runs only if the hook fires.

    That is an `all_done` join and a `when` on the hooked step's status: hooks add no engine rule.
    """
    guards: dict[str, dict[str, Any]] = {}
    for name, step in steps.items():
        for kind, hook in step.get("hooks", {}).items():
            for target in hook.get("run", []):
                guards[target] = {
                    "join": "all_done",
                    "when": f"{{{{ steps['{name}'].status == '{HOOK_STATUS[kind]}' }}}}",
                }
    return guards


def _for_each(step: Mapping[str, Any]) -> ForEach | None:
    over = step.get("for_each")
    if over is None:
        return None
    return ForEach(
        over=dict(over) if isinstance(over, dict) else {"item": over},
        parallelism=step.get("parallelism", DEFAULT_PARALLELISM),
        on_item_failure=OnFailure(step.get("on_item_failure", "fail")),
    )


def _retry_policy(raw: Mapping[str, Any]) -> RetryPolicy:
    jitter = raw.get("jitter", False)
    max_delay = raw.get("max_delay")
    return RetryPolicy(
        max_attempts=raw.get("max_attempts", 1),
        delay=parse_duration(raw.get("delay", 0)),
        backoff=Backoff(raw.get("backoff", "fixed")),
        max_delay=parse_duration(max_delay) if max_delay is not None else None,
        jitter=0.5 if jitter is True else float(jitter or 0),
    )


def _schema_problems(
    validator: Draft202012Validator,
    doc: Any,
    prefix: tuple[str | int, ...],
    *,
    templates_ok: bool = False,
) -> Iterator[Problem]:
    for error in validator.iter_errors(doc):
        if templates_ok and isinstance(error.instance, str) and is_template(error.instance):
            # In a step's config a template stands in for a value of any type; checked when it
            # renders. Elsewhere (name, steps, retry, timeout...) nothing renders it.
            continue
        where = (*prefix, *error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - allowed):
                yield Problem(
                    format_path((*where, key)), f"unknown field{_did_you_mean(key, allowed)}"
                )
            continue
        yield Problem(format_path(where), _schema_message(error))


_NAME_RULES = {
    STEP_NAME_PATTERN: "letters, digits, '_' and '-'; starting with a letter or '_'",
    NAME_PATTERN: "letters, digits, '_', '.' and '-'; starting with a letter or digit",
    QUEUE_PATTERN: "lowercase letters, digits, '_' and '-'; starting with a letter; "
    "at most 50 characters",
}


def _schema_message(error: Any) -> str:
    rule = _NAME_RULES.get(error.schema.get("pattern", ""))
    if error.validator == "pattern" and rule:
        kind = "queue name" if error.schema.get("pattern") == QUEUE_PATTERN else "name"
        return f"{error.instance!r} is not a valid {kind} ({rule})"
    if error.validator == "oneOf" and "description" in error.schema:
        return f"{error.instance!r} is not valid: expected {error.schema['description']}"
    return error.message


def _input_schema_problems(schema: Any) -> list[Problem]:
    if not isinstance(schema, dict):
        return []
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [
            Problem(
                format_path(("input", *exc.absolute_path)),
                f"not a valid JSON Schema: {exc.message}",
            )
        ]
    return []


def _step_problems(
    steps: Mapping[str, Any], step_schemas: StepSchemas, checks: Checks
) -> list[Problem]:
    needs = {
        name: [n for n in step.get("needs", []) if isinstance(n, str)]
        for name, step in steps.items()
        if isinstance(step, dict) and isinstance(step.get("needs", []), list)
    }
    problems: list[Problem] = []
    for name, step in steps.items():
        if not isinstance(step, dict):
            continue
        base = ("steps", name)
        problems += _type_problems(base, step, step_schemas)
        problems += _extra_problems(name, step, steps, needs, step_schemas, checks)
        for index, need in enumerate(needs.get(name, [])):
            if need not in steps:
                hint = _did_you_mean(need, steps)
                problems.append(
                    Problem(format_path((*base, "needs", index)), f"unknown step '{need}'{hint}")
                )
        if isinstance(step.get("with", {}), dict):  # else the schema has reported it
            raw = checks.raw_keys.get(step.get("type"), frozenset())  # type: ignore[arg-type]
            problems += _template_problems(name, step, steps, needs, raw)
    cycle = find_cycle(needs)
    if cycle:
        problems.append(
            Problem(format_path(("steps", cycle[0], "needs")), "cycle: " + " -> ".join(cycle))
        )
    return problems


def _type_problems(
    base: tuple[str, ...], step: Mapping[str, Any], step_schemas: StepSchemas
) -> list[Problem]:
    type_name = step.get("type")
    if not isinstance(type_name, str):
        return []
    if type_name not in step_schemas:
        known = ", ".join(sorted(step_schemas))
        hint = _did_you_mean(type_name, step_schemas)
        return [
            Problem(
                format_path((*base, "type")),
                f"unknown step type '{type_name}'{hint} (known: {known})",
            )
        ]
    problems: list[Problem] = []
    with_block = step.get("with", {})
    if type_name != "shell":
        problems += [
            Problem(
                format_path((*base, key)), f"'{key}' is only for shell steps; put it under 'with'"
            )
            for key in SHELL_SHORTHANDS
            if key in step
        ]
    elif isinstance(with_block, dict):
        problems += [
            Problem(format_path((*base, key)), f"'{key}' is given both here and in 'with'")
            for key in SHELL_SHORTHANDS
            if key in step and key in with_block
        ]
    if isinstance(with_block, dict) and not problems:
        config = step_config(step)
        validator = _validator_for(step_schemas[type_name])
        for problem in _schema_problems(validator, config, (), templates_ok=True):
            key = problem.path.split(".")[0].split("[")[0]
            where = base if key in SHELL_SHORTHANDS and key in step else (*base, "with")
            path = format_path(where) + ("." + problem.path if problem.path else "")
            problems.append(Problem(path, problem.message))
    return problems


def _extra_problems(
    name: str,
    step: Mapping[str, Any],
    steps: Mapping[str, Any],
    needs: Mapping[str, list[str]],
    step_schemas: StepSchemas,
    checks: Checks,
) -> list[Problem]:
    """What the schema cannot say: fan-out options, Lua guards, branch targets, executor checks."""
    base = ("steps", name)
    problems = [
        Problem(format_path((*base, key)), f"'{key}' is only for steps with for_each")
        for key in ("parallelism", "on_item_failure")
        if key in step and "for_each" not in step
    ]
    if "approval_timeout" in step and not step.get("requires_approval"):
        problems.append(
            Problem(
                format_path((*base, "approval_timeout")),
                "'approval_timeout' is only for steps with requires_approval",
            )
        )
    hooks = step.get("hooks")
    if isinstance(hooks, dict):
        problems += _hook_problems(name, hooks, steps, needs)
    when = step.get("when")
    if isinstance(when, dict) and isinstance(when.get("lua"), str) and checks.lua is not None:
        error = checks.lua(when["lua"])
        if error:
            problems.append(Problem(format_path((*base, "when", "lua")), error))
    with_block = step.get("with", {})
    type_name = step.get("type")
    if not isinstance(with_block, dict) or type_name not in step_schemas:
        return problems
    if type_name == "condition":
        dependents = {other for other, other_needs in needs.items() if name in other_needs}
        for key in BRANCH_KEYS:
            targets = with_block.get(key)
            if not isinstance(targets, list):
                continue
            for index, target in enumerate(targets):
                if isinstance(target, str) and target not in dependents:
                    hint = f" (steps that need it: {', '.join(sorted(dependents)) or 'none'})"
                    problems.append(
                        Problem(
                            format_path((*base, "with", key, index)),
                            f"'{target}' is not a step that needs '{name}'{hint}",
                        )
                    )
    check = checks.config.get(type_name)
    if check is not None:
        for key, message in check(with_block):
            problems.append(
                Problem(format_path((*base, "with")) + (f".{key}" if key else ""), message)
            )
    return problems


def _hook_problems(
    name: str, hooks: Mapping[str, Any], steps: Mapping[str, Any], needs: Mapping[str, list[str]]
) -> list[Problem]:
    problems: list[Problem] = []
    for kind, hook in hooks.items():
        if not isinstance(hook, dict) or not isinstance(hook.get("run"), list):
            continue
        for index, target in enumerate(hook["run"]):
            path = format_path(("steps", name, "hooks", kind, "run", index))
            other = steps.get(target)
            if not isinstance(other, dict):
                problems.append(
                    Problem(path, f"unknown step '{target}'{_did_you_mean(target, steps)}")
                )
            elif name not in needs.get(target, []):
                problems.append(Problem(path, f"'{target}' must list '{name}' in its needs"))
            elif "when" in other or "join" in other:
                problems.append(
                    Problem(path, f"'{target}' is run by a hook, which sets its when and join")
                )
    return problems


def _template_problems(
    name: str,
    step: Mapping[str, Any],
    steps: Mapping[str, Any],
    needs: Mapping[str, list[str]],
    raw_keys: frozenset[str] = frozenset(),
) -> list[Problem]:
    problems: list[Problem] = []
    sources = [
        (path, source)
        for path, source in template_strings(step_config(step), ("steps", name))
        if path[2] not in raw_keys
    ]
    when = step.get("when")
    if isinstance(when, str):
        sources.append((("steps", name, "when"), when))
    over = step.get("for_each")
    if isinstance(over, str | dict):
        sources += [
            (("steps", name, "for_each", *path), source) for path, source in template_strings(over)
        ]
    upstream = ancestors(needs, name)
    aliases = {other.replace("-", "_"): other for other in steps}
    for raw_path, source in sources:
        path = _config_path(raw_path, step)
        is_when = raw_path[-1] == "when" and len(raw_path) == 3
        error = check_syntax(source, expression=is_when)
        if error:
            problems.append(Problem(path, error))
            continue
        try:
            refs = references(
                source if not is_when or is_template(source) else "{{ " + source + " }}"
            )
        except TemplateSyntaxError as exc:
            problems.append(Problem(path, f"template syntax error: {exc.message}"))
            continue
        for root in sorted(refs.roots - CONTEXT_ROOTS):
            problems.append(
                Problem(
                    path,
                    f"unknown variable '{root}' (templates can read: "
                    "input, steps, run, parent, parents, secrets, item)",
                )
            )
        in_for_each = len(raw_path) > 2 and raw_path[2] == "for_each"
        if "item" in refs.roots and ("for_each" not in step or in_for_each):
            problems.append(Problem(path, "'item' is only defined inside a step with for_each"))
        if "parent" in refs.roots and len(needs.get(name, [])) != 1:
            problems.append(
                Problem(
                    path,
                    "'parent' is only defined for a step with exactly one need; "
                    "use parents.<name> or steps.<name>.output",
                )
            )
        for ref in sorted(refs.steps):
            target = ref if ref in steps else aliases.get(ref)
            if target is None:
                problems.append(Problem(path, f"unknown step '{ref}'{_did_you_mean(ref, steps)}"))
            elif target == name:
                problems.append(Problem(path, f"step '{ref}' cannot read its own output"))
            elif target not in upstream:
                problems.append(
                    Problem(
                        path, f"reads step '{ref}', which this step does not need (add it to needs)"
                    )
                )
    return problems


def _config_path(raw_path: tuple[str | int, ...], step: Mapping[str, Any]) -> str:
    """Report shorthand keys where the user wrote them (`steps.x.run`), the rest under `with`."""
    if (
        len(raw_path) >= 3
        and raw_path[2] not in ("when", "for_each")
        and not (raw_path[2] in SHELL_SHORTHANDS and raw_path[2] in step)
    ):
        return format_path((*raw_path[:2], "with", *raw_path[2:]))
    return format_path(raw_path)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
