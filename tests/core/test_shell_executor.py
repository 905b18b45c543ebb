from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from steps.executors.base import StepContext, StepResult
from steps.executors.shell import ShellExecutor


class LogRecorder:
    """A log sink that keeps every line and can signal when a given line arrives."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._awaited: dict[tuple[str, str], threading.Event] = {}

    def __call__(self, stream: str, text: str) -> None:
        with self._lock:
            self.lines.append((stream, text))
            event = self._awaited.get((stream, text))
        if event is not None:
            event.set()

    def arrival_of(self, stream: str, text: str) -> threading.Event:
        return self._awaited.setdefault((stream, text), threading.Event())

    def on(self, stream: str) -> list[str]:
        with self._lock:
            return [text for s, text in self.lines if s == stream]


def make_ctx(
    config: dict[str, Any], timeout: float = 10, log: LogRecorder | None = None
) -> StepContext:
    return StepContext(
        run_id="run-1",
        step_name="build",
        attempt=1,
        config=config,
        timeout=timeout,
        log=log if log is not None else LogRecorder(),
    )


def run(config: dict[str, Any], **kwargs: Any) -> StepResult:
    return ShellExecutor().run(make_ctx(config, **kwargs))


@pytest.fixture
def in_background():
    """Runs the executor in a thread, so a test can watch it while the process is still alive."""
    with ThreadPoolExecutor(max_workers=2) as pool:

        def start(ctx: StepContext) -> Future[StepResult]:
            return pool.submit(ShellExecutor().run, ctx)

        yield start


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed orphan may linger as a zombie if PID 1 (in a container) does not reap it; it runs nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until_gone(pids: list[int], seconds: float = 5) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [pid for pid in pids if is_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def test_output_lines_are_merged_into_the_output_and_later_lines_win():
    log = LogRecorder()
    result = run(
        {"run": """echo 'OUTPUT: {"a": 1, "b": 1}'; echo plain; echo 'OUTPUT: {"b": 2}'"""},
        log=log,
    )
    assert result == StepResult(ok=True, output={"a": 1, "b": 2})
    assert log.on("stdout") == ['OUTPUT: {"a": 1, "b": 1}', "plain", 'OUTPUT: {"b": 2}']


def test_lines_reach_the_log_while_the_process_is_still_running(tmp_path, in_background):
    flag = tmp_path / "flag"
    log = LogRecorder()
    first_line = log.arrival_of("stdout", "first")
    script = 'echo first; while [ ! -e "$FLAG" ]; do sleep 0.01; done; echo second'
    future = in_background(make_ctx({"run": script, "env": {"FLAG": str(flag)}}, log=log))

    assert first_line.wait(timeout=5)
    assert not future.done()  # the script waits for the flag, so it cannot have exited yet
    flag.touch()
    assert future.result(timeout=5).ok
    assert log.on("stdout") == ["first", "second"]


def test_a_non_zero_exit_fails_with_the_last_stderr_lines():
    result = run({"run": 'for i in 1 2 3 4 5 6 7; do echo "err $i" >&2; done; exit 3'})
    assert not result.ok
    assert result.error == "exit code 3: err 3\nerr 4\nerr 5\nerr 6\nerr 7"
    assert result.output == {}


def test_the_stderr_tail_in_the_error_is_truncated():
    result = run({"run": "printf '%03000d\\n' 0 >&2; exit 1"})
    assert result.error == "exit code 1: " + "0" * 1000


def test_a_process_killed_by_a_signal_says_which():
    result = run({"run": "kill -KILL $$"})
    assert result.error == "killed by signal SIGKILL"


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "pids"
    # A direct child, a grandchild in a subshell, and the subshell itself: all must die.
    script = (
        'sleep 30 & echo $! >> "$PIDS"; '
        '(sleep 30 & echo $! >> "$PIDS"; wait) & echo $! >> "$PIDS"; '
        "wait"
    )
    started = time.monotonic()
    result = run({"run": script, "env": {"PIDS": str(pid_file)}}, timeout=0.5)

    assert result.error == "timed out after 0.5s"
    assert time.monotonic() - started < 2  # SIGTERM was enough; no SIGKILL grace period needed
    pids = [int(line) for line in pid_file.read_text().split()]
    assert len(pids) == 3
    assert wait_until_gone(pids) == []


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period():
    started = time.monotonic()
    result = run({"run": "trap '' TERM; sleep 30"}, timeout=0.2)
    assert result.error == "timed out after 0.2s"
    assert 2 <= time.monotonic() - started < 5


def test_background_children_left_behind_do_not_hang_a_finished_step(tmp_path):
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    result = run({"run": 'sleep 30 & echo $! > "$PIDS"; echo done', "env": {"PIDS": str(pid_file)}})
    assert result.ok
    assert time.monotonic() - started < 2
    assert wait_until_gone([int(pid_file.read_text())]) == []


def test_argv_runs_the_program_directly_without_a_shell():
    log = LogRecorder()
    result = run({"argv": ["printf", "%s|", "$HOME", "a b; echo no"]}, log=log)
    assert result.ok
    assert log.on("stdout") == ["$HOME|a b; echo no|"]


def test_env_values_reach_the_process_as_strings():
    log = LogRecorder()
    config = {
        "run": 'echo "$GREETING $COUNT $RATIO $FLAG home=${HOME-unset}"',
        "env": {"GREETING": "hi", "COUNT": 3, "RATIO": 0.5, "FLAG": True},
        "inherit_env": False,
    }
    assert run(config, log=log).ok
    assert log.on("stdout") == ["hi 3 0.5 true home=unset"]


def test_the_worker_environment_is_inherited_by_default(monkeypatch):
    monkeypatch.setenv("FURROW_TEST_MARKER", "inherited")
    log = LogRecorder()
    assert run({"run": 'echo "$FURROW_TEST_MARKER"'}, log=log).ok
    assert log.on("stdout") == ["inherited"]


def test_cwd_sets_the_working_directory(tmp_path):
    log = LogRecorder()
    assert run({"run": "pwd", "cwd": str(tmp_path)}, log=log).ok
    assert log.on("stdout") == [str(tmp_path)]


def test_bad_output_lines_are_logged_on_system_and_ignored():
    log = LogRecorder()
    script = """echo 'OUTPUT: not json'; echo 'OUTPUT: [1]'; echo 'OUTPUT: {"kept": true}'"""
    result = run({"run": script}, log=log)
    assert result == StepResult(ok=True, output={"kept": True})
    system = log.on("system")
    assert len(system) == 2
    assert system[0].startswith("ignored OUTPUT line: not valid JSON")
    assert system[1] == "ignored OUTPUT line: expected a JSON object, got an array"


def test_a_missing_program_is_a_failure_result_not_an_exception():
    result = run({"argv": ["/nonexistent/furrow-no-such-program", "x"]})
    assert not result.ok
    assert result.error == (
        "could not start '/nonexistent/furrow-no-such-program': No such file or directory"
    )


def test_a_missing_working_directory_is_a_failure_result(tmp_path):
    missing = tmp_path / "missing"
    result = run({"run": "true", "cwd": str(missing)})
    assert not result.ok
    assert str(missing) in result.error


def test_setting_the_cancel_event_stops_the_process(in_background):
    log = LogRecorder()
    started_line = log.arrival_of("stdout", "started")
    ctx = make_ctx({"run": "echo started; sleep 30"}, timeout=30, log=log)
    future = in_background(ctx)

    assert started_line.wait(timeout=5)
    ctx.cancel.set()
    assert future.result(timeout=5).error == "cancelled"


@pytest.mark.parametrize(
    "config",
    [{"run": "true", "argv": ["true"]}, {}, {"argv": []}, {"run": "true", "env": {"A": [1]}}],
)
def test_invalid_config_is_a_failure_result(config):
    result = run(config)
    assert not result.ok
    assert result.error.startswith("invalid config")
