from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from flows.language.templates import (
    TemplateError,
    evaluate_condition,
    render_string,
    render_value,
    step_context,
)

CONTEXT: dict[str, Any] = {
    "input": {
        "replicas": 3,
        "name": "web",
        "config": {"tags": ["a", "b"]},
        "dry_run": False,
        "nothing": None,
        "off": "false",
        "zero": "0",
        "yes": "yes",
    },
    "steps": step_context({"say-hello": {"output": {"greeting": "hi"}}}),
    "run": {"id": "r-1"},
}
SHELL = frozenset({"run"})


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.replicas }}", 3),
        ("  {{ input.replicas * 2 }}  ", 6),
        ("{{ input.config }}", {"tags": ["a", "b"]}),
        ("{{ input.config.tags }}", ["a", "b"]),
        ("{{ input.dry_run }}", False),
        ("{{ input.nothing }}", None),
        ("{{ input.name }}", "web"),
        ("{{ steps.say_hello.output.greeting }}", "hi"),
        ("{{ steps['say-hello'].output }}", {"greeting": "hi"}),
    ],
)
def test_a_single_expression_keeps_its_native_type(template, expected):
    assert render_value({"value": template}, CONTEXT) == {"value": expected}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("replicas={{ input.replicas }}", "replicas=3"),
        ("{{ input.replicas }}{{ input.replicas }}", "33"),
        ("{{ input.config }} / {{ input.dry_run }}", '{"tags": ["a", "b"]} / false'),
        ("{{ input.nothing }}!", "null!"),
        ("{% if input.dry_run %}dry{% else %}real{% endif %}", "real"),
        ("{{ run.id }}-{{ steps.say_hello.output.greeting }}", "r-1-hi"),
    ],
)
def test_anything_else_renders_to_text(template, expected):
    assert render_value({"value": template}, CONTEXT) == {"value": expected}


def test_render_value_walks_nested_values_and_leaves_plain_ones_alone():
    value = {"a": ["{{ input.replicas }}", 5, None, {"b": "x{{ input.name }}"}], "c": True}
    assert render_value(value, CONTEXT) == {"a": [3, 5, None, {"b": "xweb"}], "c": True}


def shell_words(rendered: dict[str, Any]) -> list[str]:
    """The words /bin/sh would run: split the command line, expand the variables it references.

    Only `${NAME}` references to variables the render returned are expanded, and only once, so a
    value that itself looks like `${HOME}` stays as it is, as it would in the shell.
    """
    env = rendered.get("env", {})
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
        for word in shlex.split(rendered["run"])
    ]


HOSTILE = [
    "$(rm -rf ~)",
    "'; rm -rf / #",
    '"; rm -rf / #',
    "`reboot`",
    "a b\tc\nd",
    "; echo pwned && true || false | cat > /tmp/x",
    "${HOME}",
    "",
    "it's",
    "\\",
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo {{ input.value }}", ["echo", "{}"]),
        ('echo "{{ input.value }}"', ["echo", "{}"]),
        ("echo '{{ input.value }}'", ["echo", "{}"]),
        ('echo "pre {{ input.value }} post"', ["echo", "pre {} post"]),
        ("echo x{{ input.value }}y", ["echo", "x{}y"]),
    ],
    ids=["bare", "double-quoted", "single-quoted", "inside-text", "glued"],
)
def test_a_value_in_a_shell_command_is_one_argument_equal_to_the_input(hostile, command, expected):
    context = {**CONTEXT, "input": {"value": hostile}}
    config = {"run": command, "note": "{{ input.value }}"}
    rendered = render_value(config, context, shell_quoted=SHELL)
    assert hostile == "" or hostile not in rendered["run"]  # never pasted into the command
    assert shell_words(rendered) == [word.replace("{}", hostile) for word in expected]
    assert rendered["note"] == hostile  # only the shell-quoted key is treated as a command line


def test_structured_values_reach_a_shell_command_as_json():
    rendered = render_value({"run": "deploy {{ input.config }}"}, CONTEXT, shell_quoted=SHELL)
    assert shell_words(rendered) == ["deploy", '{"tags": ["a", "b"]}']


def test_shell_values_do_not_override_the_steps_own_env():
    config = {"run": "echo {{ input.name }}", "env": {"MODE": "{{ input.replicas }}"}}
    rendered = render_value(config, CONTEXT, shell_quoted=SHELL)
    assert rendered["env"]["MODE"] == 3
    assert shell_words(rendered) == ["echo", "web"]


def test_shell_quoting_applies_only_to_top_level_keys():
    context = {**CONTEXT, "input": {"value": "$(id)"}}
    rendered = render_value({"with": {"run": "{{ input.value }}"}}, context, shell_quoted=SHELL)
    assert rendered == {"with": {"run": "$(id)"}}


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "x {{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ input.__class__ }}",
        "{{ run.id.__class__.__init__.__globals__ }}",
    ],
)
@pytest.mark.parametrize("shell_quoted", [frozenset(), SHELL], ids=["text", "shell"])
def test_the_sandbox_blocks_attribute_access_to_python_internals(template, shell_quoted):
    with pytest.raises(TemplateError) as excinfo:
        render_value({"run": template}, CONTEXT, shell_quoted=shell_quoted)
    assert excinfo.value.path == "run"
    assert "unsafe" in excinfo.value.message


def test_the_sandbox_blocks_calling_unsafe_methods():
    with pytest.raises(TemplateError, match="unsafe"):
        render_string("{{ input.config.tags.append.__self__.__class__ }}", CONTEXT)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": "{{ input.missing }}"}, "a"),
        ({"a": "text {{ input.missing }}"}, "a"),
        ({"a": {"b": ["ok", "{{ input.missing.deeper }}"]}}, "a.b[1]"),
        ({"a": "{{ steps.unknown.output }}"}, "a"),
        ({"a": "{{ nowhere }}"}, "a"),
    ],
)
def test_reading_an_undefined_value_raises_template_error_with_the_path(value, path):
    with pytest.raises(TemplateError) as excinfo:
        render_value(value, CONTEXT)
    assert excinfo.value.path == path
    assert str(excinfo.value).startswith(f"{path}: template error: ")


def test_an_undefined_value_in_a_shell_command_raises_too():
    with pytest.raises(TemplateError, match=r"^run: template error: .*'missing'"):
        render_value({"run": "echo {{ input.missing }}"}, CONTEXT, shell_quoted=SHELL)


def test_a_path_prefix_is_kept_in_the_error():
    with pytest.raises(TemplateError) as excinfo:
        render_value("{{ input.missing }}", CONTEXT, path=("steps", "b", "with", "y"))
    assert excinfo.value.path == "steps.b.with.y"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("input.replicas > 2", True),
        ("{{ input.replicas > 5 }}", False),
        ("input.name == 'web' and not input.dry_run", True),
        ("input.dry_run", False),
        ("input.nothing", False),
        ("input.config.tags", True),
        ("input.name", True),
        ("input.off", False),  # the string "false"
        ("{{ input.off }}", False),
        ("input.zero", False),  # the string "0"
        ("input.yes", True),
        ("steps.say_hello.output.greeting == 'hi'", True),
    ],
)
def test_evaluate_condition(condition, expected):
    assert evaluate_condition(condition, CONTEXT) is expected


@pytest.mark.parametrize("condition", ["input.missing", "input.replicas >", "nope"])
def test_a_condition_that_cannot_be_evaluated_raises_template_error_at_when(condition):
    with pytest.raises(TemplateError) as excinfo:
        evaluate_condition(condition, CONTEXT)
    assert excinfo.value.path == "when"


def test_step_context_adds_underscore_aliases_without_overriding_real_names():
    steps = step_context({"a-b": {"output": 1}, "a_b": {"output": 2}, "c": {"output": 3}})
    assert steps == {"a-b": {"output": 1}, "a_b": {"output": 2}, "c": {"output": 3}}
