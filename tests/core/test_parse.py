from __future__ import annotations

import pytest

from flows.language.errors import DefinitionError
from flows.language.parse import MAX_DEPTH, MAX_NODES, load_document


def refused(data: bytes | str, **kwargs: object) -> str:
    """The message load_document refuses `data` with."""
    with pytest.raises(DefinitionError) as excinfo:
        load_document(data, **kwargs)  # type: ignore[arg-type]
    return str(excinfo.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"name": "ci", "steps": {}}', {"name": "ci", "steps": {}}),
        (b'{"name": "ci"}', {"name": "ci"}),
        ("  \n[1, 2]", [1, 2]),
        ("name: ci\nsteps:\n  a: {type: noop}\n", {"name": "ci", "steps": {"a": {"type": "noop"}}}),
        (b"name: ci\n", {"name": "ci"}),
        ("- 1\n- two\n", [1, "two"]),
    ],
    ids=["json", "json-bytes", "json-array", "yaml", "yaml-bytes", "yaml-list"],
)
def test_json_and_yaml_are_told_apart_automatically(data, expected):
    assert load_document(data) == expected


def test_an_explicit_format_is_respected():
    assert load_document('{"a": 1}', fmt="yaml") == {"a": 1}
    assert load_document("{name: ci, steps: [a]}", fmt="yaml") == {"name": "ci", "steps": ["a"]}
    assert refused("a: 1", fmt="json").startswith("not valid JSON")


@pytest.mark.parametrize("data", ["", "   ", "\n\t\n", b"", b"  \n"])
def test_an_empty_document_is_refused(data):
    assert refused(data) == "document is empty"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"a": 1,\n "b": }', "not valid JSON: Expecting value (line 2, column 7)"),
        ('{"a": 1} x', "not valid JSON: Extra data (line 1, column 10)"),
        ("[1, 2,\n\n  3", "not valid JSON: Expecting ',' delimiter (line 3, column 4)"),
    ],
)
def test_invalid_json_is_refused_with_line_and_column(data, expected):
    assert refused(data) == expected


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ("a: 1\nb: [1, 2\nc: 3", "(line 3, column 2)"),
        ("a:\n  - b\n c: d", "(line 3, column 2)"),
        ("a: 'unterminated\n", "(line 2, column 1)"),
        ("a: b: c\n", "(line 1, column 5)"),
    ],
)
def test_invalid_yaml_is_refused_with_line_and_column(data, where):
    message = refused(data)
    assert message.startswith("not valid YAML: ")
    assert message.endswith(where)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"name: \xff\xfe", "document is not UTF-8 text (invalid start byte at byte 6)"),
        (b'{"a": "\xe9t\xe9"}', "document is not UTF-8 text (invalid continuation byte at byte 7)"),
    ],
)
def test_bytes_that_are_not_utf8_are_refused(data, expected):
    assert refused(data) == expected


def test_a_document_over_max_bytes_is_refused_before_parsing():
    assert refused(b"a: 1234567", max_bytes=5) == "document is 10 bytes; the limit is 5 bytes"
    assert load_document(b"a: 1", max_bytes=4) == {"a": 1}


def test_max_bytes_counts_the_utf8_bytes_of_text_not_its_characters():
    text = "a: " + "é" * 10  # 13 characters, 23 bytes
    assert refused(text, max_bytes=15) == "document is 23 bytes; the limit is 15 bytes"
    assert load_document(text, max_bytes=23) == {"a": "é" * 10}


@pytest.mark.parametrize(
    "data",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a": ' * 10_000 + "1" + "}" * 10_000,
        "[" * 100_000 + "]" * 100_000,
        "a: " + "[" * 10_000 + "]" * 10_000,
        "a: " + "[" * 200_000 + "]" * 200_000,
        "a: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        # Block style needs indentation growing with depth: 1,000 levels are already 1 MB.
        "".join("  " * depth + "a:\n" for depth in range(1_000)) + "  " * 1_000 + "b: 1\n",
        "".join("  " * depth + "-\n" for depth in range(1_000)) + "  " * 1_000 + "1\n",
    ],
    ids=[
        "json-arrays",
        "json-objects",
        "json-arrays-100k",
        "yaml-flow-sequences",
        "yaml-flow-sequences-200k",  # libyaml overflowed the C stack here (a segfault)
        "yaml-flow-mappings",
        "yaml-block-mappings",
        "yaml-block-sequences",
    ],
)
def test_a_deeply_nested_document_is_refused_without_recursion_error_or_crash(data):
    assert refused(data) == f"document is nested too deeply (the limit is {MAX_DEPTH} levels)"


def test_nesting_up_to_the_limit_is_accepted():
    depth = MAX_DEPTH - 1  # the innermost scalar is one more level
    doc = load_document("[" * depth + "1" + "]" * depth)
    for _ in range(depth):
        doc = doc[0]
    assert doc == 1


def test_a_yaml_alias_bomb_is_refused_by_counting_values():
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    assert refused("\n".join(lines)) == f"document has more than {MAX_NODES:,} values"


@pytest.mark.parametrize(
    "data",
    [
        "a: &a [*a]\n",
        "x0: &x0 [1]\n" + "".join(f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 100)),
    ],
    ids=["self-referencing", "chain-of-100"],
)
def test_nesting_built_from_yaml_aliases_counts_too(data):
    assert refused(data) == f"document is nested too deeply (the limit is {MAX_DEPTH} levels)"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a: 1\na: 2\n", "not valid YAML: duplicate key 'a' (line 2, column 1)"),
        ("x:\n  a: 1\n  a: 2\n", "not valid YAML: duplicate key 'a' (line 3, column 3)"),
        ("steps:\n  build: {type: noop}\n  build: {type: shell}\n", "duplicate key 'build'"),
    ],
)
def test_duplicate_yaml_keys_are_refused(data, expected):
    assert expected in refused(data)


def test_yaml_merge_keys_still_work_and_keys_beside_them_override():
    doc = load_document(
        "base: &base {image: alpine, retries: 1}\njob:\n  <<: *base\n  retries: 3\n"
    )
    assert doc["job"] == {"image": "alpine", "retries": 3}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("date: 2024-01-31\n", {"date": "2024-01-31"}),
        ("at: 2024-01-31T10:00:00Z\n", {"at": "2024-01-31T10:00:00Z"}),
        ("at: 2024-01-31 10:00:00.5 +01:00\n", {"at": "2024-01-31 10:00:00.5 +01:00"}),
    ],
)
def test_yaml_timestamps_stay_strings(data, expected):
    assert load_document(data) == expected


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ("1: a\n", "1"),
        ("1.5: a\n", "1.5"),
        ("true: a\n", "True"),
        ("~: a\n", "None"),
        ("x:\n  2: b\n", "2"),
    ],
)
def test_keys_that_are_not_strings_are_refused(data, key):
    assert refused(data) == f"keys must be strings, found {key}"


def test_an_unhashable_yaml_key_is_refused():
    assert refused("? [a]\n: b\n").startswith("not valid YAML: found unhashable key")


@pytest.mark.parametrize(
    "data",
    [
        "a: !!python/object/apply:os.system ['echo hi']\n",
        "a: !!python/name:os.system\n",
    ],
)
def test_python_tags_are_refused(data):
    assert refused(data).startswith("not valid YAML: could not determine a constructor")


@pytest.mark.parametrize(
    ("data", "kind"),
    [("a: !!binary aGVsbG8=\n", "bytes"), ("a: !!set {x, y}\n", "set")],
)
def test_values_json_cannot_hold_are_refused(data, kind):
    assert refused(data).endswith(f"({kind})")
