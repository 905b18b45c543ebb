"""Django-Q2 task entry points. They carry ids only; everything else is read from the database."""

from __future__ import annotations

from steps.worker import execute_chain


def execute(step_id: int, attempt: int) -> int:
    return execute_chain(step_id, attempt)
