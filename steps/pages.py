"""HTMX pages under the admin."""

from __future__ import annotations

from typing import Any


def urls(wrap: Any) -> list[Any]:
    return []
