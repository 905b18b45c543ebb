"""One text per definition, so two versions can be compared line by line.

The canonical form is YAML with keys sorted at every level: two definitions that mean the same
(keys typed in another order, JSON or YAML, different quoting or comments) read the same, and a
diff shows only what changed in meaning.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml


def canonical_yaml(definition: Any) -> str:
    return yaml.safe_dump(
        definition, sort_keys=True, allow_unicode=True, default_flow_style=False, width=100
    )


def unified_diff(old: Any, new: Any, old_label: str, new_label: str, context: int = 3) -> str:
    """A unified diff of two definitions' canonical YAML; empty when they are the same."""
    lines = difflib.unified_diff(
        canonical_yaml(old).splitlines(keepends=True),
        canonical_yaml(new).splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
        n=context,
    )
    return "".join(lines)
