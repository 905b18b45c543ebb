"""The pure cores import no Django: the definition language, the engine and the executors."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = [
    "flows/language",
    "runs/engine",
    "steps/executors",
    "steps/registry.py",
    "steps/worker_rules.py",
]
BANNED_PACKAGES = frozenset({"django", "rest_framework", "channels", "django_q"})


def python_files(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def imported_modules(source: str) -> Iterator[str]:
    """Every module an `import` or `from ... import` names, including `from x import models`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def is_banned(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    return parts[0] in BANNED_PACKAGES or "models" in parts


PURE_FILES = [path for entry in PURE for path in python_files(entry)]


def test_the_pure_cores_are_where_we_expect_them():
    names = {path.relative_to(ROOT).as_posix() for path in PURE_FILES}
    assert {"flows/language/parse.py", "runs/engine/plan.py", "steps/registry.py"} <= names
    assert any(name.startswith("steps/executors/") for name in names)


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_a_pure_core_module_imports_no_django_and_no_models(path):
    banned = sorted({m for m in imported_modules(path.read_text(encoding="utf-8")) if is_banned(m)})
    assert banned == [], f"{path.relative_to(ROOT)} imports {', '.join(banned)}"


@pytest.mark.parametrize(
    ("source", "banned"),
    [
        ("import django", True),
        ("import django.conf", True),
        ("from django.db import transaction", True),
        ("from rest_framework import serializers", True),
        ("import channels.layers", True),
        ("from django_q.tasks import async_task", True),
        ("from runs.models import Run", True),
        ("from flows import models", True),
        ("from . import models", True),
        ("def f():\n    from runs import models", True),
        ("import json", False),
        ("from flows.language.spec import WorkflowSpec", False),
        ("import jsonschema", False),
    ],
)
def test_the_import_check_itself_catches_banned_imports(source, banned):
    assert any(is_banned(m) for m in imported_modules(source)) is banned


@pytest.mark.parametrize("package", ["flows/language", "runs/engine", "steps/executors"])
def test_each_pure_package_has_a_ruff_config_banning_those_imports(package):
    config = tomllib.loads((ROOT / package / "ruff.toml").read_text(encoding="utf-8"))
    assert config["extend"] == "../../pyproject.toml"
    banned = config["lint"]["flake8-tidy-imports"]["banned-api"]
    assert BANNED_PACKAGES | {"flows.models", "runs.models"} <= set(banned)
    assert all(entry["msg"] for entry in banned.values())
