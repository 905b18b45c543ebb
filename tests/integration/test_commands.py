"""Management commands: validate, import_workflows, start_run, show_run, run_logs, ensure_admin."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from flows.models import Workflow
from runs import services
from runs.models import Run
from tests.conftest import drive

pytestmark = pytest.mark.django_db

HELLO = """
name: hello
input:
  type: object
  properties: {who: {type: string, default: world}}
steps:
  hello:
    type: shell
    run: 'echo "hello {{ input.who }}"; echo "OUTPUT: {\\"n\\": 1}"'
  bye:
    type: shell
    needs: [hello]
    run: echo bye >&2
"""

BROKEN = """
name: broken
steps:
  a:
    type: shel
    run: echo hi
  b:
    type: shell
    needs: [c]
    run: echo hi
"""

FAILING = """
name: failing
steps:
  boom:
    type: shell
    run: exit 3
"""


def command(*args: Any) -> str:
    """Run a management command as `manage.py` would (system checks too); return what it printed."""
    out = io.StringIO()
    call_command(*args, stdout=out, skip_checks=False)
    return out.getvalue()


def failing_command(*args: Any) -> tuple[str, CommandError]:
    """Run a command that must fail; returns its output and the error."""
    out = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command(*args, stdout=out, skip_checks=False)
    return out.getvalue(), excinfo.value


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    (tmp_path / "nested").mkdir()
    (tmp_path / "hello.yaml").write_text(HELLO)
    (tmp_path / "nested" / "failing.yml").write_text(FAILING)
    (tmp_path / "notes.txt").write_text("not a definition")
    return tmp_path


@pytest.fixture
def finished_run(publish: Any) -> Run:
    return drive(services.start_run(publish(HELLO), {"who": "ada"}))


# validate


def test_validate_prints_ok_with_the_name_and_step_count_of_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO)
    assert command("validate", str(path)) == f"ok   {path} (hello, 2 steps)\n"


def test_validate_prints_every_problem_with_its_path_and_exits_1(tmp_path: Path) -> None:
    good, bad, empty = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "empty.json"
    good.write_text(HELLO)
    bad.write_text(BROKEN)
    empty.write_text("")
    out, error = failing_command("validate", str(bad), str(empty), str(good))
    lines = out.splitlines()
    assert lines[0].startswith(f"{bad}: steps.a.type: unknown step type 'shel'")
    assert lines[1] == f"{bad}: steps.b.needs[0]: unknown step 'c'"
    assert lines[2] == f"{empty}: document is empty"
    assert lines[3] == f"ok   {good} (hello, 2 steps)"
    assert len(lines) == 4
    assert error.returncode == 1
    assert "2 of 3 files" in str(error)


def test_validate_reports_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps: [\n")
    out, error = failing_command("validate", str(path))
    assert out.startswith(f"{path}: not valid YAML:")
    assert "line 3" in out
    assert error.returncode == 1


def test_validate_expands_directories_to_their_definition_files_sorted_and_recursive(
    flows_dir: Path,
) -> None:
    out = command("validate", str(flows_dir))
    assert out.splitlines() == [
        f"ok   {flows_dir / 'hello.yaml'} (hello, 2 steps)",
        f"ok   {flows_dir / 'nested' / 'failing.yml'} (failing, 1 steps)",
    ]


def test_validate_names_a_path_that_does_not_exist(tmp_path: Path) -> None:
    _, error = failing_command("validate", str(tmp_path / "missing.yaml"))
    assert str(error) == f"{tmp_path / 'missing.yaml'}: no such file or directory"


# import_workflows


def test_import_publishes_each_file_and_a_second_import_leaves_them_unchanged(
    flows_dir: Path,
) -> None:
    assert command("import_workflows", str(flows_dir)).splitlines() == [
        "published hello v1",
        "published failing v1",
    ]
    hello = Workflow.objects.get(name="hello")
    assert hello.latest_version.number == 1
    assert hello.latest_version.source == HELLO
    assert hello.events.get().actor == "cli"

    assert command("import_workflows", str(flows_dir)).splitlines() == [
        "unchanged hello v1",
        "unchanged failing v1",
    ]
    assert hello.versions.count() == 1


def test_import_publishes_a_changed_file_as_the_next_version(tmp_path: Path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO)
    command("import_workflows", str(path))
    path.write_text(HELLO.replace("echo bye", "echo goodbye"))
    assert command("import_workflows", str(path)) == "published hello v2\n"


def test_import_with_one_bad_file_publishes_the_good_ones_and_exits_1(flows_dir: Path) -> None:
    (flows_dir / "broken.yaml").write_text(BROKEN)
    out, error = failing_command("import_workflows", str(flows_dir))
    lines = out.splitlines()
    assert lines[0].startswith(f"{flows_dir / 'broken.yaml'}: steps.a.type: unknown step type")
    assert lines[1] == f"{flows_dir / 'broken.yaml'}: steps.b.needs[0]: unknown step 'c'"
    assert lines[2:] == ["published hello v1", "published failing v1"]
    assert error.returncode == 1
    assert sorted(Workflow.objects.values_list("name", flat=True)) == ["failing", "hello"]


# start_run


def test_start_run_creates_a_cli_run_and_prints_its_id(publish: Any) -> None:
    publish(HELLO)
    out = command("start_run", "hello", "--input", '{"who": "ada"}')
    run = Run.objects.get()
    assert out == f"{run.pk}\n"
    assert (run.status, run.source, run.input) == ("running", "cli", {"who": "ada"})
    assert run.events.first().actor == "cli"
    assert list(run.steps.values_list("name", "status")) == [("hello", "ready"), ("bye", "pending")]


def test_start_run_reads_the_input_from_a_file(publish: Any, tmp_path: Path) -> None:
    publish(HELLO)
    path = tmp_path / "input.yaml"
    path.write_text("who: grace\n")
    command("start_run", "hello", "--input-file", str(path))
    assert Run.objects.get().input == {"who": "grace"}


def test_start_run_refuses_input_that_is_not_json_and_creates_no_run(publish: Any) -> None:
    publish(HELLO)
    _, error = failing_command("start_run", "hello", "--input", "{who: ada")
    assert str(error).startswith("--input: not valid JSON")
    assert not Run.objects.exists()


def test_start_run_lists_each_input_problem_exits_1_and_creates_no_run(publish: Any) -> None:
    publish(HELLO)
    _, error = failing_command("start_run", "hello", "--input", '{"who": 5}')
    assert error.returncode == 1
    assert "  input.who: 5 is not of type 'string'" in str(error).splitlines()
    assert not Run.objects.exists()


def test_start_run_of_an_unknown_workflow_is_an_error() -> None:
    _, error = failing_command("start_run", "nope")
    assert str(error) == "no workflow named 'nope'"


class Background:
    """A management command running in a thread; its output and error once it has ended."""

    def __init__(self, *args: Any) -> None:
        self.out = io.StringIO()
        self.error: CommandError | None = None
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()

    def _run(self, *args: Any) -> None:
        try:
            call_command(*args, stdout=self.out, skip_checks=False)
        except CommandError as exc:
            self.error = exc
        finally:
            connection.close()

    def join(self, timeout: float = 30.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the command did not stop waiting"


def wait_for_run(timeout: float = 10.0) -> Run:
    """The run the background command started, once it is in the database."""
    deadline = time.monotonic() + timeout
    while not Run.objects.exists():
        assert time.monotonic() < deadline, "no run was started"
        time.sleep(0.02)
    return Run.objects.latest("created_at")


@pytest.mark.django_db(transaction=True)
def test_start_run_wait_prints_step_changes_and_exits_0_when_the_run_succeeds(
    publish: Any,
) -> None:
    publish(HELLO)
    command_ = Background("start_run", "hello", "--wait", "--timeout", "30")
    run = drive(wait_for_run())  # the worker cluster's part
    command_.join()
    assert command_.error is None
    lines = command_.out.getvalue().splitlines()
    assert lines[0] == f"run {run.pk} started"
    assert "  hello  succeeded" in lines
    assert "  bye    succeeded" in lines
    assert lines[-1] == f"run {run.pk} succeeded"


@pytest.mark.django_db(transaction=True)
def test_start_run_wait_exits_1_when_the_run_fails(publish: Any) -> None:
    publish(FAILING)
    command_ = Background("start_run", "failing", "--wait", "--timeout", "30")
    run = drive(wait_for_run())
    command_.join()
    assert command_.error is not None
    assert command_.error.returncode == 1
    assert "step 'boom' failed" in str(command_.error)
    assert command_.out.getvalue().splitlines()[-1] == f"run {run.pk} failed"


def test_start_run_wait_exits_2_when_the_run_is_still_going_at_the_timeout(publish: Any) -> None:
    publish(HELLO)
    out, error = failing_command("start_run", "hello", "--wait", "--timeout", "0.3")
    run = Run.objects.get()
    assert error.returncode == 2
    assert f"run {run.pk} is still running after 0.3s" in str(error)
    assert run.status == "running"
    assert "succeeded" not in out


# show_run


def test_show_run_prints_the_run_and_a_table_of_its_steps(finished_run: Run) -> None:
    out = command("show_run", str(finished_run.pk))
    assert f"run       {finished_run.pk}" in out
    assert "workflow  hello" in out
    assert "version   v1" in out
    assert "status    succeeded" in out
    assert 'input     {"who": "ada"}' in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["STEP", "TYPE", "STATUS", "ATTEMPT", "DURATION", "ERROR"]
    assert table[1].split()[:4] == ["hello", "shell", "succeeded", "1"]
    assert table[2].split()[:4] == ["bye", "shell", "succeeded", "1"]


def test_show_run_shows_the_first_line_of_a_failed_steps_error(publish: Any) -> None:
    run = drive(services.start_run(publish(FAILING), {}))
    out = command("show_run", str(run.pk))
    assert "status    failed" in out
    boom = next(line for line in out.splitlines() if line.startswith("boom"))
    assert boom.split()[:3] == ["boom", "shell", "failed"]
    assert run.steps.get().error.splitlines()[0] in boom


def test_show_run_json_is_the_api_run_detail(finished_run: Run, api: Any) -> None:
    out = command("show_run", str(finished_run.pk), "--json")
    assert json.loads(out) == api.get(f"/api/v1/runs/{finished_run.pk}").json()


@pytest.mark.parametrize("raw_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_show_run_of_a_malformed_or_unknown_id_is_an_error(raw_id: str) -> None:
    _, error = failing_command("show_run", raw_id)
    assert raw_id in str(error)


# run_logs


def test_run_logs_prints_each_line_with_its_step_in_order(finished_run: Run) -> None:
    assert command("run_logs", str(finished_run.pk)).splitlines() == [
        "[hello] hello ada",
        '[hello] OUTPUT: {"n": 1}',
        "[bye:stderr] bye",
    ]


def test_run_logs_step_keeps_one_steps_lines(finished_run: Run) -> None:
    assert command("run_logs", str(finished_run.pk), "--step", "bye") == "[bye:stderr] bye\n"


def test_run_logs_after_continues_from_a_line_id(finished_run: Run) -> None:
    last_of_hello = finished_run.log_lines.filter(step_run__name="hello").last()
    out = command("run_logs", str(finished_run.pk), "--after", str(last_of_hello.pk))
    assert out == "[bye:stderr] bye\n"


def test_run_logs_of_a_step_the_run_does_not_have_is_an_error(finished_run: Run) -> None:
    _, error = failing_command("run_logs", str(finished_run.pk), "--step", "nope")
    assert "has no step 'nope'" in str(error)


def test_run_logs_follow_on_a_finished_run_prints_everything_and_exits(finished_run: Run) -> None:
    out = command("run_logs", str(finished_run.pk), "--follow")
    assert out.splitlines()[-1] == "[bye:stderr] bye"


# ensure_admin


def test_ensure_admin_creates_a_superuser_once_and_prints_its_password_only_then() -> None:
    first = command("ensure_admin")
    password = first.split("password: ")[1].split(" ")[0]
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.email == "admin@localhost"
    assert admin.check_password(password)

    second = command("ensure_admin")
    assert second.startswith("Admin user 'admin' exists")
    assert password not in second
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_ensure_admin_takes_a_username_and_email() -> None:
    out = command("ensure_admin", "--username", "root", "--email", "root@example.com")
    assert out.startswith("Created admin user 'root' with password: ")
    assert get_user_model().objects.get(username="root").email == "root@example.com"
