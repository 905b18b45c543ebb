from __future__ import annotations

import pytest

from runs import services
from runs.models import LogLine

pytestmark = pytest.mark.django_db

PIPELINE = """
name: pipeline
input:
  type: object
  properties: {who: {type: string, default: "$(touch /tmp/furrow-pwned)"}}
steps:
  hello:
    type: shell
    run: 'echo hello {{ input.who }}; echo "OUTPUT: {\\"n\\": 41}"'
  add:
    type: shell
    needs: [hello]
    env: {N: "{{ steps.hello.output.n }}"}
    run: 'echo "OUTPUT: {\\"n\\": $((N+1))}"'
  done:
    type: noop
    needs: [add]
    with: {n: "{{ steps.add.output.n }}"}
"""


def test_a_shell_pipeline_passes_data_with_output_lines_and_quotes_input(publish, run_to_end):
    workflow = publish(PIPELINE)
    run = run_to_end(services.start_run(workflow, {}))
    assert run.status == "succeeded"
    assert run.output == {"done": {"n": 42}}
    texts = list(LogLine.objects.filter(run=run).values_list("text", flat=True))
    assert "hello $(touch /tmp/furrow-pwned)" in texts
