from __future__ import annotations

from typing import Any

import pytest

from flows.language.errors import DefinitionError, Problem
from flows.language.spec import Backoff, OnFailure, RetryPolicy
from flows.language.validate import compile_definition, content_hash, validate
from steps.registry import builtin_schemas

SCHEMAS = builtin_schemas()
DURATION_HINT = "expected seconds, or a duration such as 500ms, 30s, 10m, 1h30m"
STEP_NAME_RULE = "letters, digits, '_' and '-'; starting with a letter or '_'"


def workflow(**steps: Any) -> dict[str, Any]:
    return {"name": "ci", "steps": steps}


def noop(*needs: str, **fields: Any) -> dict[str, Any]:
    return {"type": "noop", **({"needs": list(needs)} if needs else {}), **fields}


def problems(doc: Any) -> list[str]:
    return [str(problem) for problem in validate(doc, SCHEMAS)]


def _first_problem(value: Any) -> str | None:
    """Test ids: the first expected problem, so a failure names the case it is about."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[0]
    return None


def test_a_need_naming_an_unknown_step_is_reported_at_its_index():
    doc = workflow(build=noop(), deploy=noop("build", "biuld"))
    [problem] = validate(doc, SCHEMAS)
    assert problem == Problem(
        "steps.deploy.needs[1]", "unknown step 'biuld' (did you mean 'build'?)"
    )
    doc = workflow(build=noop(), deploy=noop("biuld"))
    [problem] = validate(doc, SCHEMAS)
    assert str(problem) == "steps.deploy.needs[0]: unknown step 'biuld' (did you mean 'build'?)"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # structure
        ({**workflow(a=noop()), "stesp": 1}, ["stesp: unknown field (did you mean 'steps'?)"]),
        ({**workflow(a=noop()), "extra": 1}, ["extra: unknown field"]),
        ({}, ["'name' is a required property", "'steps' is a required property"]),
        ({"name": "ci"}, ["'steps' is a required property"]),
        ({"steps": {"a": noop()}}, ["'name' is a required property"]),
        ([], ["[] is not of type 'object'"]),
        ({"name": "ci", "steps": {}}, ["steps: {} should be non-empty"]),
        ({"name": "ci", "steps": []}, ["steps: [] is not of type 'object'"]),
        (workflow(a="noop"), ["steps.a: 'noop' is not of type 'object'"]),
        (workflow(a={"needs": []}), ["steps.a: 'type' is a required property"]),
        (workflow(a=noop(colour="red")), ["steps.a.colour: unknown field"]),
        (workflow(a=noop(wiht={})), ["steps.a.wiht: unknown field (did you mean 'with'?)"]),
        (
            {"name": "-ci", "steps": {"a": noop()}},
            [
                "name: '-ci' is not a valid name (letters, digits, '_', '.' and '-'; "
                "starting with a letter or digit)"
            ],
        ),
        # step names
        (workflow(**{"1st": noop()}), [f"steps: '1st' is not a valid name ({STEP_NAME_RULE})"]),
        (workflow(**{"a b": noop()}), [f"steps: 'a b' is not a valid name ({STEP_NAME_RULE})"]),
        (workflow(**{"a.b": noop()}), [f"steps: 'a.b' is not a valid name ({STEP_NAME_RULE})"]),
        # needs
        (workflow(a=noop(needs="b"), b=noop()), ["steps.a.needs: 'b' is not of type 'array'"]),
        (
            workflow(a=noop("b", "b"), b=noop()),
            ["steps.a.needs: ['b', 'b'] has non-unique elements"],
        ),
        # step types
        (
            workflow(a={"type": "shel", "run": "make"}),
            [
                "steps.a.type: unknown step type 'shel' (did you mean 'shell'?) (known: approval, condition, delay, http, http_async, noop, script, shell, subflow, transform)"
            ],
        ),
        (
            workflow(a={"type": "python"}),
            [
                "steps.a.type: unknown step type 'python' (known: approval, condition, delay, http, http_async, noop, script, shell, subflow, transform)"
            ],
        ),
        # `with` for the type
        (workflow(x={"type": "http"}), ["steps.x.with: 'url' is a required property"]),
        (workflow(x={"type": "http", "with": {}}), ["steps.x.with: 'url' is a required property"]),
        (
            workflow(x={"type": "http", "with": {"url": "https://example.com", "bogus": 1}}),
            ["steps.x.with.bogus: unknown field"],
        ),
        (
            workflow(x={"type": "http", "with": {"url": "u", "allow_status": [99]}}),
            ["steps.x.with.allow_status[0]: 99 is less than the minimum of 100"],
        ),
        (workflow(x=noop(**{"with": "url"})), ["steps.x.with: 'url' is not of type 'object'"]),
        (
            workflow(x=noop(**{"with": "{{ input.config }}"})),
            ["steps.x.with: '{{ input.config }}' is not of type 'object'"],
        ),
        (workflow(x={"type": "shell", "run": ""}), ["steps.x.run: '' should be non-empty"]),
        (
            workflow(x={"type": "shell", "run": "make", "with": {"cwd": 3}}),
            ["steps.x.with.cwd: 3 is not of type 'string'"],
        ),
        # shell shorthands
        (
            workflow(x={"type": "http", "with": {"url": "u"}, "run": "curl u"}),
            ["steps.x.run: 'run' is only for shell steps; put it under 'with'"],
        ),
        (
            workflow(x=noop(argv=["true"], env={"A": "1"})),
            [
                "steps.x.argv: 'argv' is only for shell steps; put it under 'with'",
                "steps.x.env: 'env' is only for shell steps; put it under 'with'",
            ],
        ),
        (
            workflow(x={"type": "shell", "run": "make", "with": {"run": "make test"}}),
            ["steps.x.run: 'run' is given both here and in 'with'"],
        ),
        # cycles
        (workflow(a=noop("b"), b=noop("a")), ["steps.a.needs: cycle: a -> b -> a"]),
        (workflow(a=noop("a")), ["steps.a.needs: cycle: a -> a"]),
        (
            workflow(a=noop("c"), b=noop("a"), c=noop("b"), d=noop()),
            ["steps.a.needs: cycle: a -> c -> b -> a"],
        ),
        # templates
        (
            workflow(a=noop(), b=noop("a", **{"with": {"y": "{{ steps.a.output. }}"}})),
            ["steps.b.with.y: template syntax error: expected name or number (line 1)"],
        ),
        (
            workflow(b={"type": "shell", "run": "echo {{ input.x "}),
            [
                "steps.b.run: template syntax error: unexpected end of template, "
                "expected 'end of print statement'. (line 1)"
            ],
        ),
        (
            workflow(b={"type": "shell", "run": "make", "env": {"A": "{% if %}"}}),
            [
                "steps.b.env.A: template syntax error: Expected an expression, got 'end of statement block' (line 1)"
            ],
        ),
        (
            workflow(b=noop(**{"with": {"y": "{{ secret.token }}"}})),
            [
                "steps.b.with.y: unknown variable 'secret' (templates can read: input, steps, run, parent, parents, secrets, item)"
            ],
        ),
        (
            workflow(b=noop(**{"with": {"y": ["ok", "{{ nope }}"]}})),
            [
                "steps.b.with.y[1]: unknown variable 'nope' (templates can read: input, steps, run, parent, parents, secrets, item)"
            ],
        ),
        (
            workflow(build=noop(), b=noop("build", **{"with": {"y": "{{ steps.biuld.output }}"}})),
            ["steps.b.with.y: unknown step 'biuld' (did you mean 'build'?)"],
        ),
        (
            workflow(b=noop(**{"with": {"y": "{{ steps['nope'].output }}"}})),
            ["steps.b.with.y: unknown step 'nope'"],
        ),
        (
            workflow(a=noop(), b=noop(**{"with": {"y": "{{ steps.a.output }}"}})),
            ["steps.b.with.y: reads step 'a', which this step does not need (add it to needs)"],
        ),
        (
            workflow(a=noop(), b=noop("a"), c=noop(**{"with": {"y": "{{ steps.b.output }}"}})),
            ["steps.c.with.y: reads step 'b', which this step does not need (add it to needs)"],
        ),
        (
            workflow(b=noop(**{"with": {"y": "{{ steps.b.output }}"}})),
            ["steps.b.with.y: step 'b' cannot read its own output"],
        ),
        (
            workflow(
                **{"say-hello": noop(), "b": noop(**{"with": {"y": "{{ steps.say_hello }}"}})}
            ),
            [
                "steps.b.with.y: reads step 'say_hello', which this step does not need (add it to needs)"
            ],
        ),
        # when
        (
            workflow(b=noop(when="input.x ==")),
            ["steps.b.when: template syntax error: unexpected 'end of template' (line 1)"],
        ),
        (
            workflow(b=noop(when="{{ input.x == }}")),
            ["steps.b.when: template syntax error: unexpected 'end of template' (line 1)"],
        ),
        (
            workflow(b=noop(when="flag == 1")),
            [
                "steps.b.when: unknown variable 'flag' (templates can read: input, steps, run, parent, parents, secrets, item)"
            ],
        ),
        (
            workflow(a=noop(), b=noop(when="steps.a.output.ok")),
            ["steps.b.when: reads step 'a', which this step does not need (add it to needs)"],
        ),
        (
            workflow(b=noop(when=1)),
            [
                "steps.b.when: 1 is not valid: expected a template expression, true/false, or {lua: <source>}"
            ],
        ),
        # input schema
        (
            {**workflow(a=noop()), "input": {"type": "objekt"}},
            [
                "input.type: not a valid JSON Schema: 'objekt' is not valid under any of the given schemas"
            ],
        ),
        (
            {**workflow(a=noop()), "input": {"properties": {"n": {"minimum": "1"}}}},
            ["input.properties.n.minimum: not a valid JSON Schema: '1' is not of type 'number'"],
        ),
        ({**workflow(a=noop()), "input": []}, ["input: [] is not of type 'object'"]),
        # durations
        (
            workflow(a=noop(timeout="10 minutes")),
            [f"steps.a.timeout: '10 minutes' is not valid: {DURATION_HINT}"],
        ),
        (
            workflow(a=noop(timeout="1h 30m")),
            [f"steps.a.timeout: '1h 30m' is not valid: {DURATION_HINT}"],
        ),
        (workflow(a=noop(timeout="")), [f"steps.a.timeout: '' is not valid: {DURATION_HINT}"]),
        (workflow(a=noop(timeout=-1)), [f"steps.a.timeout: -1 is not valid: {DURATION_HINT}"]),
        (workflow(a=noop(timeout=True)), [f"steps.a.timeout: True is not valid: {DURATION_HINT}"]),
        (
            workflow(a=noop(timeout="{{ input.t }}")),
            [f"steps.a.timeout: '{{{{ input.t }}}}' is not valid: {DURATION_HINT}"],
        ),
        (
            workflow(a=noop(retry={"delay": "5x", "max_delay": "soon"})),
            [
                f"steps.a.retry.delay: '5x' is not valid: {DURATION_HINT}",
                f"steps.a.retry.max_delay: 'soon' is not valid: {DURATION_HINT}",
            ],
        ),
        # retry fields
        (
            workflow(
                a=noop(retry={"max_attempts": 0, "backoff": "random", "jitter": 2, "tries": 3})
            ),
            [
                "steps.a.retry.backoff: 'random' is not one of ['fixed', 'linear', 'exponential']",
                "steps.a.retry.jitter: 2 is not valid under any of the given schemas",
                "steps.a.retry.max_attempts: 0 is less than the minimum of 1",
                "steps.a.retry.tries: unknown field",
            ],
        ),
        (
            workflow(a=noop(retry={"max_attempts": "3"})),
            ["steps.a.retry.max_attempts: '3' is not of type 'integer'"],
        ),
        (
            workflow(a=noop(retry="{{ input.retry }}")),
            ["steps.a.retry: '{{ input.retry }}' is not of type 'object'"],
        ),
        (
            workflow(a=noop(on_failure="ignore")),
            ["steps.a.on_failure: 'ignore' is not one of ['fail', 'continue']"],
        ),
        (
            {
                **workflow(a=noop()),
                "defaults": {"timeout": "x", "retry": {"max_attempts": 101}, "when": True},
            },
            [
                "defaults.retry.max_attempts: 101 is greater than the maximum of 100",
                f"defaults.timeout: 'x' is not valid: {DURATION_HINT}",
                "defaults.when: unknown field",
            ],
        ),
    ],
    ids=_first_problem,
)
def test_an_invalid_definition_is_reported_with_the_exact_path(doc, expected):
    assert problems(doc) == expected


def test_validation_does_not_crash_on_a_template_where_no_template_is_rendered():
    doc = {"name": "{{ input.name }}", "steps": "{{ input.steps }}"}
    assert problems(doc) == [
        "name: '{{ input.name }}' is not a valid name (letters, digits, '_', '.' and '-'; "
        "starting with a letter or digit)",
        "steps: '{{ input.steps }}' is not of type 'object'",
    ]


def test_a_template_may_stand_for_a_typed_value_of_the_step_config():
    doc = workflow(x={"type": "http", "with": {"url": "u", "follow_redirects": "{{ input.f }}"}})
    assert problems(doc) == []


def test_several_problems_are_reported_at_once_sorted_by_path():
    doc = {
        "name": "ci",
        "extra": True,
        "steps": {
            "deploy": noop("biuld", timeout="soon"),
            "build": {"type": "nope", "with": {"y": "{{ secret }}"}},
            "a": noop("a"),
        },
    }
    found = validate(doc, SCHEMAS)
    assert found == sorted(found)
    assert [str(p) for p in found] == [
        "extra: unknown field",
        "steps.a.needs: cycle: a -> a",
        "steps.build.type: unknown step type 'nope' (did you mean 'noop'?) (known: approval, condition, delay, http, http_async, noop, script, shell, subflow, transform)",
        "steps.build.with.y: unknown variable 'secret' (templates can read: input, steps, run, parent, parents, secrets, item)",
        "steps.deploy.needs[0]: unknown step 'biuld' (did you mean 'build'?)",
        f"steps.deploy.timeout: 'soon' is not valid: {DURATION_HINT}",
    ]
    with pytest.raises(DefinitionError) as excinfo:
        compile_definition(doc, SCHEMAS)
    assert excinfo.value.problems == tuple(found)
    assert str(excinfo.value).startswith("6 problems: extra: unknown field; steps.a.needs")


def test_a_valid_definition_compiles_in_topological_order():
    doc = workflow(
        deploy=noop("test", "build"),
        test=noop("build"),
        lint=noop(),
        build=noop(),
    )
    spec = compile_definition(doc, SCHEMAS)
    assert [step.name for step in spec.steps] == ["lint", "build", "test", "deploy"]
    assert [step.position for step in spec.steps] == [0, 1, 2, 3]
    assert spec.step("deploy").needs == ("test", "build")
    assert spec.sinks() == ("lint", "deploy")
    assert spec.input_schema == {"type": "object"}


def test_defaults_are_merged_into_each_steps_retry_timeout_and_on_failure():
    doc = {
        "name": "ci",
        "defaults": {
            "retry": {"max_attempts": 3, "delay": "2s", "backoff": "exponential"},
            "timeout": "10m",
            "on_failure": "continue",
        },
        "steps": {
            "plain": noop(),
            "own": noop(retry={"delay": 1, "jitter": True}, timeout=5, on_failure="fail"),
        },
    }
    spec = compile_definition(doc, SCHEMAS)
    plain, own = spec.step("plain"), spec.step("own")
    assert plain.retry == RetryPolicy(max_attempts=3, delay=2.0, backoff=Backoff.EXPONENTIAL)
    assert plain.timeout == 600.0
    assert plain.on_failure == OnFailure.CONTINUE
    assert own.retry == RetryPolicy(
        max_attempts=3, delay=1.0, backoff=Backoff.EXPONENTIAL, jitter=0.5
    )
    assert own.timeout == 5.0
    assert own.on_failure == OnFailure.FAIL


def test_without_defaults_a_step_gets_one_attempt_no_timeout_and_fails_the_run():
    step = compile_definition(workflow(a=noop()), SCHEMAS).step("a")
    assert step.retry == RetryPolicy()
    assert step.timeout is None
    assert step.on_failure == OnFailure.FAIL
    assert step.config == {}


def test_shell_shorthands_are_folded_into_the_config():
    doc = workflow(
        build={"type": "shell", "run": "make", "env": {"CI": "1"}, "with": {"cwd": "/src"}},
        test={"type": "shell", "argv": ["pytest", "-q"]},
    )
    spec = compile_definition(doc, SCHEMAS)
    assert spec.step("build").config == {"cwd": "/src", "run": "make", "env": {"CI": "1"}}
    assert spec.step("test").config == {"argv": ["pytest", "-q"]}


@pytest.mark.parametrize(
    "template",
    [
        "{{ steps.say_hello.output }}",
        "{{ steps['say-hello'].output }}",
        "{{ steps.say_hello.output.greeting | upper }}",
    ],
)
def test_a_hyphenated_step_is_readable_with_underscores(template):
    doc = workflow(**{"say-hello": noop(), "b": noop("say-hello", **{"with": {"m": template}})})
    assert problems(doc) == []
    assert compile_definition(doc, SCHEMAS).step("b").config == {"m": template}


def test_templates_may_read_input_run_and_their_own_loop_variables():
    template = "{% for tag in input.tags %}{{ tag }}-{{ run.id }}{% endfor %}"
    doc = workflow(a=noop(when="input.go and run.id", **{"with": {"m": template}}))
    assert problems(doc) == []


def test_a_transitive_ancestor_counts_as_upstream():
    doc = workflow(a=noop(), b=noop("a"), c=noop("b", **{"with": {"y": "{{ steps.a.output }}"}}))
    assert problems(doc) == []


def test_content_hash_ignores_key_order_but_not_content():
    one = {"name": "ci", "steps": {"a": {"type": "noop", "with": {"x": 1, "y": 2}}}}
    two = {"steps": {"a": {"with": {"y": 2, "x": 1}, "type": "noop"}}, "name": "ci"}
    three = {"name": "ci", "steps": {"a": {"type": "noop", "with": {"x": 1, "y": 3}}}}
    assert content_hash(one) == content_hash(two)
    assert content_hash(one) != content_hash(three)
    assert len(content_hash(one)) == 64
