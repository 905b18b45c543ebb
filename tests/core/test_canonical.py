"""Canonical YAML and the diff of two definitions (flows/language/canonical.py)."""

from __future__ import annotations

from flows.language.canonical import canonical_yaml, unified_diff

ONE = {"name": "w", "steps": {"b": {"type": "noop", "needs": ["a"]}, "a": {"type": "noop"}}}


def test_key_order_does_not_change_the_canonical_text():
    reordered = {
        "steps": {"a": {"type": "noop"}, "b": {"needs": ["a"], "type": "noop"}},
        "name": "w",
    }
    assert canonical_yaml(reordered) == canonical_yaml(ONE)


def test_same_meaning_has_an_empty_diff():
    assert unified_diff(ONE, dict(reversed(ONE.items())), "w v1", "w v2") == ""


def test_a_change_shows_as_removed_and_added_lines_under_labels():
    two = {
        "name": "w",
        "steps": {**ONE["steps"], "b": {"type": "shell", "run": "echo hi", "needs": ["a"]}},
    }
    diff = unified_diff(ONE, two, "w v1", "w v2")
    assert diff.startswith("--- w v1\n+++ w v2\n@@ ")
    changed = [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")
    ]
    assert changed == ["-    type: noop", "+    run: echo hi", "+    type: shell"]


def test_unicode_stays_readable():
    assert "Zürich" in canonical_yaml({"name": "w", "description": "Zürich"})
