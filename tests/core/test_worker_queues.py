"""Queues in the definition language, the queue -> cluster rule and the registry's liveness rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.language.canonical import canonical_yaml
from flows.language.parse import load_document
from flows.language.schema import QUEUE_PATTERN, WORKFLOW
from flows.language.validate import compile_definition, validate
from steps.registry import builtin_schemas
from steps.worker_rules import (
    WorkerState,
    check_queue,
    check_worker_name,
    cluster_name,
    host_of,
    state_of,
    step_worker,
)

SCHEMAS = builtin_schemas()
QUEUE_RULE = "lowercase letters, digits, '_' and '-'; starting with a letter; at most 50 characters"


def problems(doc: Any) -> list[str]:
    return [str(problem) for problem in validate(doc, SCHEMAS)]


def test_a_step_runs_on_its_own_queue_else_the_workflows_default_else_the_default_queue():
    spec = compile_definition(
        load_document(
            """
            name: render
            defaults: {queue: cpu}
            steps:
              fetch: {type: noop}
              draw: {type: noop, needs: [fetch], queue: gpu}
            """
        ),
        SCHEMAS,
    )
    assert spec.step("fetch").queue == "cpu"
    assert spec.step("draw").queue == "gpu"

    plain = compile_definition({"name": "plain", "steps": {"a": {"type": "noop"}}}, SCHEMAS)
    assert plain.step("a").queue == "default"


@pytest.mark.parametrize(
    ("queue", "where"),
    [
        ("GPU", "steps.a.queue"),
        ("9lives", "steps.a.queue"),
        ("has space", "steps.a.queue"),
        ("", "steps.a.queue"),
        ("a" * 51, "steps.a.queue"),
        ("gpu.big", "steps.a.queue"),
        ("gpu/x", "steps.a.queue"),
    ],
)
def test_a_bad_queue_name_on_a_step_is_a_clear_error_at_its_path(queue, where):
    doc = {"name": "ci", "steps": {"a": {"type": "noop", "queue": queue}}}
    assert problems(doc) == [f"{where}: {queue!r} is not a valid queue name ({QUEUE_RULE})"]


def test_a_queue_that_is_not_a_string_or_a_bad_default_queue_is_reported_too():
    doc = {"name": "ci", "defaults": {"queue": 3}, "steps": {"a": {"type": "noop", "queue": []}}}
    assert problems(doc) == [
        "defaults.queue: 3 is not of type 'string'",
        "steps.a.queue: [] is not of type 'string'",
    ]
    doc = {"name": "ci", "defaults": {"queue": "Big"}, "steps": {"a": {"type": "noop"}}}
    assert problems(doc) == [f"defaults.queue: 'Big' is not a valid queue name ({QUEUE_RULE})"]


def test_the_json_schema_describes_queue_on_steps_and_defaults():
    step = WORKFLOW["properties"]["steps"]["additionalProperties"]["properties"]["queue"]
    defaults = WORKFLOW["properties"]["defaults"]["properties"]["queue"]
    assert step == defaults
    assert step["pattern"] == QUEUE_PATTERN


def test_canonical_yaml_keeps_a_queue_so_a_version_diff_shows_it():
    doc = {"name": "ci", "steps": {"a": {"type": "noop", "queue": "gpu"}}}
    text = canonical_yaml(doc)
    assert "queue: gpu" in text
    assert load_document(text) == doc


@pytest.mark.parametrize(
    ("queue", "cluster"),
    [("default", "furrow"), ("gpu", "furrow.gpu"), ("special", "furrow.special")],
)
def test_the_default_queue_is_the_sites_own_cluster_and_others_get_a_cluster_each(queue, cluster):
    assert cluster_name(queue, "furrow") == cluster


def test_names_are_checked_with_the_rule_in_the_message():
    assert check_queue("gpu-2") == "gpu-2"
    with pytest.raises(ValueError, match="not a valid queue name"):
        check_queue("GPU")
    assert check_worker_name("special@box") == "special@box"
    with pytest.raises(ValueError, match="not a valid worker name"):
        check_worker_name("a/b")


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "stopped", "expected"),
    [
        (0, False, WorkerState.ALIVE),
        (30, False, WorkerState.ALIVE),
        (30.5, False, WorkerState.STALE),
        (300, False, WorkerState.STALE),
        (301, False, WorkerState.GONE),
        (0, True, WorkerState.GONE),
        (-5, False, WorkerState.ALIVE),  # a clock a little ahead of ours
    ],
)
def test_a_workers_state_is_its_heartbeats_age(age, stopped, expected):
    heartbeat = NOW - timedelta(seconds=age)
    state = state_of(heartbeat, NOW, stale_after=30, gone_after=300, stopped=stopped)
    assert state == expected


@pytest.mark.parametrize(
    ("cluster", "worker"),
    [(None, "box:42"), ("", "box:42"), ("special@box", "special@box/box:42")],
)
def test_a_step_records_its_cluster_and_the_host_stays_readable(cluster, worker):
    assert step_worker(cluster, "box", 42) == worker
    assert host_of(worker) == "box"
