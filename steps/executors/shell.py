"""Run a command in its own process group, streaming its lines to the step log as they come.

Stdout lines starting with ``OUTPUT: `` carry a JSON object that is merged into the step output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import IO, Any, ClassVar

from steps.executors.base import LogSink, StepContext, StepResult, config_error, format_seconds

OUTPUT_PREFIX = "OUTPUT: "
POLL_SECONDS = 0.05
"""How often the wait loop looks at ctx.cancel."""
TERM_GRACE_SECONDS = 2.0
"""Time between SIGTERM and SIGKILL when a step is stopped."""
READER_JOIN_SECONDS = 2.0
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 1000
MAX_LINE_BYTES = 64 * 1024
"""Longer lines are logged in pieces, so one huge line cannot exhaust the worker's memory."""


class ShellExecutor:
    type: ClassVar[str] = "shell"
    description: ClassVar[str] = (
        "Runs a command or argv; values reach it as environment variables; `OUTPUT: {json}` lines set the output."
    )
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "run": {"type": "string", "minLength": 1},
            "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "env": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "cwd": {"type": "string", "minLength": 1},
            "inherit_env": {"type": "boolean", "default": True},
        },
        "oneOf": [{"required": ["run"]}, {"required": ["argv"]}],
        "additionalProperties": False,
    }
    shell_quoted: ClassVar[frozenset[str]] = frozenset({"run"})

    def run(self, ctx: StepContext) -> StepResult:
        problem = _exclusive_error(ctx.config) or config_error(self.config_schema, ctx.config)
        if problem:
            return StepResult.failure(problem)
        command = _command(ctx.config)
        try:
            proc = _start(command, ctx.config, ctx)
        except (OSError, ValueError) as exc:
            return StepResult.failure(_start_error(command, exc))
        collector = _Collector(ctx.log)
        readers = collector.start_readers(proc, ctx.step_name)
        stopped = _wait(proc, ctx)
        # The leader is gone, but children it left behind (`cmd &`) would keep the pipes open.
        _kill_group(proc.pid, signal.SIGKILL)
        collector.join(readers)
        return _result(proc.returncode, stopped, collector)


def _exclusive_error(config: Mapping[str, Any]) -> str | None:
    # Said here because the schema's oneOf would only report "valid under each of ...".
    if ("run" in config) == ("argv" in config):
        return (
            "invalid config: set exactly one of run (a shell command) or argv (a list of arguments)"
        )
    return None


def _command(config: Mapping[str, Any]) -> list[str]:
    if "argv" in config:
        return list(config["argv"])
    return ["/bin/sh", "-c", config["run"]]


def _environment(config: Mapping[str, Any], ctx: StepContext) -> dict[str, str]:
    env = dict(os.environ) if config.get("inherit_env", True) else {}
    # Which run, step and attempt this is: scripts use them for temp files and idempotency keys.
    env.update(FURROW_RUN_ID=ctx.run_id, FURROW_STEP=ctx.step_name, FURROW_ATTEMPT=str(ctx.attempt))
    env.update({name: _env_value(value) for name, value in config.get("env", {}).items()})
    return env


def _env_value(value: Any) -> str:
    # YAML and JSON spell booleans in lower case; scripts test `[ "$X" = true ]`, not `True`.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list) or value is None:
        return json.dumps(value)  # a template such as "{{ steps.a.output }}" renders to an object
    return str(value)


def _start(
    command: list[str], config: Mapping[str, Any], ctx: StepContext
) -> subprocess.Popen[bytes]:
    # A new session makes the child a process-group leader, so one killpg reaches its children too.
    return subprocess.Popen(
        command,
        cwd=config.get("cwd"),
        env=_environment(config, ctx),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _start_error(command: list[str], exc: OSError | ValueError) -> str:
    if not isinstance(exc, OSError):
        return f"could not start {command[0]!r}: {exc}"
    reason = exc.strerror or str(exc)
    # For a missing cwd, subprocess reports the directory as the filename.
    if exc.filename is not None and exc.filename != command[0]:
        reason = f"{reason}: {exc.filename!r}"
    return f"could not start {command[0]!r}: {reason}"


def _wait(proc: subprocess.Popen[bytes], ctx: StepContext) -> str | None:
    """Wait for the process to end; return why it had to be stopped, or None if it ended by itself."""
    deadline = time.monotonic() + ctx.timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _terminate(proc)
            return f"timed out after {format_seconds(ctx.timeout)}"
        if ctx.cancel.is_set():
            _terminate(proc)
            return "cancelled"
        try:
            proc.wait(timeout=min(POLL_SECONDS, remaining))
        except subprocess.TimeoutExpired:
            continue
        return None


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(pgid, sig)


_JSON_TYPE_NAMES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class _Collector:
    """Receives the lines of both pipes (one reader thread each) and keeps what the result needs."""

    def __init__(self, log: LogSink) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._output: dict[str, Any] = {}
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def start_readers(self, proc: subprocess.Popen[bytes], name: str) -> list[threading.Thread]:
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            threading.Thread(target=self._read, args=(stream, pipe), name=f"{name}-{stream}")
            for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.daemon = True  # a pipe held by an escaped process must not block worker exit
            reader.start()
        return readers

    def join(self, readers: list[threading.Thread]) -> None:
        deadline = time.monotonic() + READER_JOIN_SECONDS
        for reader in readers:
            reader.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(reader.is_alive() for reader in readers):
            self._log("system", "output still open after the process group ended; stopped reading")

    def output(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._output)

    def stderr_tail(self) -> str:
        with self._lock:
            return "\n".join(self._stderr_tail)[-STDERR_TAIL_CHARS:]

    def _read(self, stream: str, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self._log(stream, line)
                if stream == "stderr":
                    with self._lock:
                        self._stderr_tail.append(line)
                elif line.startswith(OUTPUT_PREFIX):
                    self._merge(line.removeprefix(OUTPUT_PREFIX))

    def _merge(self, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError as exc:
            self._log("system", f"ignored OUTPUT line: not valid JSON ({exc})")
            return
        if not isinstance(value, dict):
            got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
            self._log("system", f"ignored OUTPUT line: expected a JSON object, got {got}")
            return
        with self._lock:
            self._output.update(value)


def _result(returncode: int, stopped: str | None, collector: _Collector) -> StepResult:
    output = collector.output()
    if stopped is not None:
        return StepResult.failure(stopped, output=output)
    if returncode == 0:
        return StepResult.success(output)
    reason = (
        f"exit code {returncode}"
        if returncode > 0
        else f"killed by signal {_signal_name(-returncode)}"
    )
    tail = collector.stderr_tail()
    return StepResult.failure(f"{reason}: {tail}" if tail else reason, output=output)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
