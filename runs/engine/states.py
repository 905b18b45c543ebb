"""Statuses of runs and steps, as the API shows them."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    """Waiting for a slot (the workflow's max_runs) or for its paused workflow to resume."""
    RUNNING = "running"
    PAUSED = "paused"
    """Nothing new starts; what runs finishes."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in RUN_FINAL


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    """Holding no worker until a callback, a timer, a child run or its items wake it."""
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in STEP_FINAL


RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
STEP_FINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
STEP_ACTIVE = frozenset(
    {StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING, StepStatus.RETRYING}
)
