"""Turn bytes or text into a JSON-like document, safely.

Whatever a user or another program sends goes through here: size, nesting and node-count limits
stop a hostile document before it costs memory or a stack overflow, and YAML is read with a
safe loader that refuses duplicate keys and keeps timestamps as strings (JSON has no dates).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from flows.language.errors import DefinitionError

MAX_DEPTH = 64
MAX_NODES = 200_000

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader without implicit timestamps, refusing duplicate keys."""

    yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`; keys written beside it override, as YAML means
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, list | dict):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_mapping)


def load_document(data: bytes | str, *, fmt: str = "auto", max_bytes: int | None = None) -> Any:
    """Parse `data` as JSON or YAML (`fmt`: "json", "yaml" or "auto") and check its shape limits.

    Raises DefinitionError with a message a person can act on; never RecursionError or
    a parser's own exception.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if max_bytes is not None and size > max_bytes:
        raise DefinitionError(f"document is {size:,} bytes; the limit is {max_bytes:,} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionError(
                f"document is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    if not data.strip():
        raise DefinitionError("document is empty")
    if fmt == "auto":
        fmt = "json" if data.lstrip()[:1] in ("{", "[") else "yaml"
    try:
        doc = _load_json(data) if fmt == "json" else _load_yaml(data)
    except RecursionError:
        raise DefinitionError(
            f"document is nested too deeply (the limit is {MAX_DEPTH} levels)"
        ) from None
    check_shape(doc)
    return doc


def _load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _load_yaml(text: str) -> Any:
    try:
        _check_yaml_depth(text)
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise DefinitionError(f"not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"not valid YAML: {exc}") from None


def _check_yaml_depth(text: str) -> None:
    """libyaml builds nodes recursively in C, where a deep document overflows the C stack (a
    segfault, not a RecursionError), so nesting is measured on the flat event stream first."""
    depth = 0
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise DefinitionError(
                    f"document is nested too deeply (the limit is {MAX_DEPTH} levels)"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def check_shape(doc: Any) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or holding more than MAX_NODES values.

    Iterative on purpose: the point is to survive documents that would overflow a recursive walk.
    YAML aliases can make a small text expand to a huge tree; counting nodes catches that too.
    """
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise DefinitionError(f"document has more than {MAX_NODES:,} values")
        if depth > MAX_DEPTH:
            raise DefinitionError(
                f"document is nested too deeply (the limit is {MAX_DEPTH} levels)"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise DefinitionError(f"keys must be strings, found {key!r}")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif not (value is None or isinstance(value, str | int | float | bool)):
            raise DefinitionError(f"unsupported value {value!r} ({type(value).__name__})")
