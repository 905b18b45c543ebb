"""`assert_verified(run)`: a run and the runs it started agree with their event logs.

Meant to be called after any scenario (tests.conftest.drive may call it once every run it drives
should verify).
"""

from __future__ import annotations

from runs.models import Run
from runs.verify import verify_all


def family(run: Run) -> list[Run]:
    """`run` and every run started under it (subflows, at any depth), parents first."""
    runs, frontier = [run], [run]
    while frontier:
        frontier = list(
            Run.objects.filter(parent_step__run__in=frontier)
            .select_related("version")
            .order_by("depth", "created_at")
        )
        runs += frontier
    return runs


def assert_verified(run: Run) -> None:
    """Fail, listing every difference, when `run` or a run under it disagrees with its events."""
    differing = {pk: found for pk, found in verify_all(family(run)).items() if found}
    assert not differing, "rows differ from the event log:\n" + "\n".join(
        f"run {pk}: {difference}" for pk, found in differing.items() for difference in found
    )
