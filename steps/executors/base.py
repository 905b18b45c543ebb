"""What every executor receives and returns. Plain Python: no Django here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

LogSink = Callable[[str, str], None]
"""Called with (stream, text) for every line a step produces; safe to call from any thread."""


@dataclass
class StepContext:
    run_id: str
    step_name: str
    attempt: int
    config: Mapping[str, Any]
    """The step's `with`, rendered against the run context."""
    timeout: float
    """Seconds this attempt may take; the executor enforces it."""
    log: LogSink = lambda stream, text: None
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set when the attempt must stop (run cancelled, lease lost)."""


@dataclass(frozen=True)
class StepResult:
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True
    """False for failures another attempt cannot fix (a template that does not render)."""

    @classmethod
    def success(cls, output: dict[str, Any] | None = None) -> StepResult:
        return cls(ok=True, output=output or {})

    @classmethod
    def failure(
        cls, error: str, output: dict[str, Any] | None = None, *, retryable: bool = True
    ) -> StepResult:
        return cls(ok=False, output=output, error=error, retryable=retryable)


class Executor(Protocol):
    type: ClassVar[str]
    config_schema: ClassVar[dict[str, Any]]
    """JSON Schema (Draft 2020-12) of the step's `with`, checked at publish time."""
    shell_quoted: ClassVar[frozenset[str]]
    """Config keys whose templates substitute shell-quoted values (a shell command line)."""

    def run(self, ctx: StepContext) -> StepResult: ...


def config_error(schema: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """The most relevant way `config` breaks `schema`, or None.

    Publishing already checks `with`, but the executor sees it after rendering, so it checks again
    and fails the step with a message instead of raising a KeyError deep inside run().
    """
    error = best_match(Draft202012Validator(schema).iter_errors(dict(config)))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"invalid config{f' at {where}' if where else ''}: {error.message}"


def format_seconds(seconds: float) -> str:
    """Seconds for error messages: 0.5 -> "0.5s", 2.0 -> "2s"."""
    return f"{seconds:g}s"
