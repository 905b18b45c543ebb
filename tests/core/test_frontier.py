"""The stream frontier's walk (runs/frontier.py): pure, with the clocks passed in."""

from __future__ import annotations

from runs.frontier import CONFIRM, Hole, Snapshot, settle

GRACE = 2.0
WALL = 1_000_000.0


def rows(*ids: int, age: float = 0.0) -> list[tuple[int, float]]:
    return [(i, WALL - age) for i in ids]


def test_contiguous_rows_move_the_frontier_to_the_last():
    assert settle(10, rows(11, 12, 13), {}, 0.0, WALL, GRACE) == 13


def test_no_rows_leave_it_where_it_was():
    assert settle(10, [], {}, 0.0, WALL, GRACE) == 10


def test_a_fresh_hole_holds_the_frontier_just_below_it():
    holes: dict[int, Hole] = {}
    assert settle(10, rows(11, 13, 14), holes, 5.0, WALL, GRACE) == 11
    assert list(holes) == [12]
    assert holes[12].first_seen == 5.0


def test_a_hole_that_fills_is_walked_through_and_forgotten():
    holes: dict[int, Hole] = {}
    settle(10, rows(11, 13), holes, 5.0, WALL, GRACE)
    assert settle(11, rows(12, 13), holes, 5.1, WALL, GRACE) == 13
    assert holes == {}


def test_a_hole_is_given_up_after_the_grace():
    holes: dict[int, Hole] = {}
    assert settle(10, rows(12), holes, 5.0, WALL, GRACE) == 10
    assert settle(10, rows(12), holes, 5.0 + GRACE - 0.01, WALL, GRACE) == 10
    assert settle(10, rows(12), holes, 5.0 + GRACE, WALL, GRACE) == 12
    assert holes == {}


def test_a_hole_below_an_old_row_is_given_up_at_once():
    # Whoever took id 11 did so before 12 was written, longer ago than any transaction lasts.
    assert settle(10, rows(12, age=GRACE), {}, 0.0, WALL, GRACE) == 12


def test_the_snapshot_proves_a_rollback_well_before_the_grace():
    holes: dict[int, Hole] = {}
    early = Snapshot(xmin=100, xmax=120)
    assert settle(10, rows(12), holes, 0.0, WALL, GRACE, early) == 10
    assert holes[11].horizon is None  # too soon: the holder may not have its xid yet

    assert settle(10, rows(12), holes, CONFIRM, WALL, GRACE, Snapshot(105, 130)) == 10
    assert holes[11].horizon == 130

    # A transaction below the horizon is still open: the row may yet commit.
    assert settle(10, rows(12), holes, CONFIRM + 0.05, WALL, GRACE, Snapshot(129, 140)) == 10
    # Every transaction below it has ended, and the row is still missing: rolled back.
    assert settle(10, rows(12), holes, CONFIRM + 0.1, WALL, GRACE, Snapshot(130, 140)) == 12


def test_the_walk_stops_at_the_first_hole_still_pending_even_after_given_up_ones():
    holes = {11: Hole(end=12, first_seen=0.0), 13: Hole(end=14, first_seen=9.0)}
    assert settle(10, rows(12, 14), holes, 9.5, WALL, GRACE) == 12
    assert list(holes) == [13]


def test_a_run_of_missing_ids_waits_one_grace_not_one_each():
    holes: dict[int, Hole] = {}
    assert settle(10, rows(11, 15), holes, 0.0, WALL, GRACE) == 11
    assert holes == {12: Hole(end=15, first_seen=0.0)}
    # 13 commits: the hole splits, and both parts keep the time it was first seen.
    assert settle(11, rows(13, 15), holes, 1.0, WALL, GRACE) == 11
    assert holes == {12: Hole(end=13, first_seen=0.0), 14: Hole(end=15, first_seen=0.0)}
    assert settle(11, rows(13, 15), holes, GRACE, WALL, GRACE) == 15
    assert holes == {}


def test_a_huge_gap_is_one_hole():
    # A sequence far ahead of an emptied table: a million missing ids cost one entry.
    holes: dict[int, Hole] = {}
    assert settle(0, rows(1_000_001), holes, 0.0, WALL, GRACE) == 0
    assert holes == {1: Hole(end=1_000_001, first_seen=0.0)}
    assert settle(0, rows(1_000_001), holes, GRACE, WALL, GRACE) == 1_000_001
