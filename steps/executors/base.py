"""What every executor receives and returns. Plain Python: no Django here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
    input: Any = None
    """The step's data-passing input: its single parent's output, a mapping of output by parent
    name when it has several, or the run input when it has none (SPANE's rule)."""
    context: Mapping[str, Any] = field(default_factory=dict)
    """The whole template context (input, steps, run, item): what JMESPath and scripts may read."""
    callback_url: str | None = None
    """For executors with `needs_callback`: the single-use URL that completes this attempt."""
    secrets: Mapping[str, str] = field(default_factory=dict)
    """Secret values by name, for executors that authenticate (connectors)."""


@dataclass(frozen=True)
class Wait:
    """The step is not done: it waits, holding no worker, until something wakes it.

    `kind` says what can wake it besides the clock: "callback" (POST to its callback URL),
    "subflow" (the child run ends), "items" (its for_each items end) or "timer" (only the clock).
    At `until` (None: never), the step ends with `on_due`.
    """

    kind: str
    until: datetime | None
    on_due: StepResult
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepResult:
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True
    """False for failures another attempt cannot fix (a template that does not render)."""
    next: tuple[str, ...] | None = None
    """The successors this step chose to run (a condition's branch); None means all of them."""
    wait: Wait | None = None
    """Set when the step waits for a callback, a timer, a child run or its items."""
    defer: float | None = None
    """Seconds to put the attempt back without counting it (rate limit, open circuit, unhealthy
    target); set with `ok` False and `error` saying why."""

    @classmethod
    def success(cls, output: dict[str, Any] | None = None) -> StepResult:
        return cls(ok=True, output=output or {})

    @classmethod
    def failure(
        cls, error: str, output: dict[str, Any] | None = None, *, retryable: bool = True
    ) -> StepResult:
        return cls(ok=False, output=output, error=error, retryable=retryable)

    @classmethod
    def waiting(cls, wait: Wait, output: dict[str, Any] | None = None) -> StepResult:
        return cls(ok=False, output=output, wait=wait)

    @classmethod
    def deferred(cls, seconds: float, reason: str) -> StepResult:
        return cls(ok=False, error=reason, defer=max(0.0, seconds))

    def as_json(self) -> dict[str, Any]:
        """The fields a stored `on_due` needs (no wait or defer: a due step ends)."""
        return {
            "ok": self.ok,
            "output": self.output,
            "error": self.error,
            "retryable": self.retryable,
            "next": list(self.next) if self.next is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepResult:
        nxt = data.get("next")
        return cls(
            ok=bool(data.get("ok")),
            output=data.get("output"),
            error=data.get("error"),
            retryable=bool(data.get("retryable", True)),
            next=tuple(nxt) if nxt is not None else None,
        )


class Executor(Protocol):
    type: ClassVar[str]
    config_schema: ClassVar[dict[str, Any]]
    """JSON Schema (Draft 2020-12) of the step's `with`, checked at publish time."""
    shell_quoted: ClassVar[frozenset[str]]
    """Config keys whose templates substitute shell-quoted values (a shell command line)."""
    description: ClassVar[str]
    """One line for `GET /api/v1/step-types`."""

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
