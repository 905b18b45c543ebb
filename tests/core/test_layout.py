"""The layered drawing of a workflow graph (flows/language/layout.py)."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.language.layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    StepShape,
    lay_out,
    render_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def shapes(needs: dict[str, list[str]], **extra: dict) -> list[StepShape]:
    return [
        StepShape(name, tuple(parents), type="noop", **extra.get(name, {}))
        for name, parents in needs.items()
    ]


def boxes_by_name(drawing):
    return {box.name: box for box in drawing.boxes}


def test_a_step_sits_in_a_column_right_of_everything_it_needs():
    drawing = lay_out(shapes({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["a", "d"]}))
    box = boxes_by_name(drawing)
    assert box["a"].x < box["b"].x == box["c"].x < box["d"].x < box["e"].x
    assert box["b"].y != box["c"].y


def test_a_need_that_skips_columns_passes_through_a_waypoint_per_column():
    drawing = lay_out(shapes({"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]}))
    long = next(arrow for arrow in drawing.arrows if (arrow.source, arrow.target) == ("a", "d"))
    assert len(long.points) == 4  # a, a waypoint in b's column, one in c's, d
    box = boxes_by_name(drawing)
    assert long.points[0] == (box["a"].x + BOX_WIDTH, box["a"].y + BOX_HEIGHT // 2)
    assert long.points[-1] == (box["d"].x, box["d"].y + BOX_HEIGHT // 2)
    # The waypoints never sit inside a box of their column.
    for x, y in long.points[1:-1]:
        for other in drawing.boxes:
            inside = other.x <= x <= other.x + BOX_WIDTH and other.y <= y <= other.y + BOX_HEIGHT
            assert not inside, f"waypoint {x},{y} is inside {other.name}"


def test_crossings_are_removed_where_an_order_without_them_exists():
    # Declared crosswise: a1 feeds b2 and a2 feeds b1. The sweep puts b1 beside a2.
    drawing = lay_out(shapes({"a1": [], "a2": [], "b2": ["a1"], "b1": ["a2"]}))
    box = boxes_by_name(drawing)
    assert (box["a1"].y < box["a2"].y) == (box["b2"].y < box["b1"].y)


def test_branch_join_fan_out_and_gate_marks():
    drawing = lay_out(
        shapes(
            {"root": [], "left": ["root"], "right": ["root"], "join": ["left", "right"]},
            join={"join": "any_succeeded"},
            left={"fan_out": True},
            right={"gate": True},
        )
    )
    box = boxes_by_name(drawing)
    assert box["root"].branch
    assert not box["left"].branch
    assert box["join"].join == "any_succeeded"
    assert box["left"].join is None
    svg = render_svg(drawing, title="t")
    assert "join: any_succeeded" in svg
    assert "approval gate" in svg
    assert 'class="stack"' in svg


def test_the_svg_is_well_formed_escapes_names_and_carries_statuses_and_links():
    name = 'a<b>&"c'
    drawing = lay_out(shapes({name: [], "next": [name]}))
    svg = render_svg(
        drawing,
        title="demo <v1>",
        statuses={name: "succeeded", "next": "running"},
        links={name: "/x?a=1&b=2"},
    )
    root = ET.fromstring(svg)  # raises on anything unescaped
    steps = {g.get("data-step"): g for g in root.iter(f"{SVG}g")}
    assert steps[name].get("data-status") == "succeeded"
    assert "s-running" in steps["next"].get("class")
    link = steps[name].find(f"{SVG}a")
    assert link is not None
    assert link.get("href") == "/x?a=1&b=2"
    assert root.get("aria-label") == "demo <v1>"


def test_long_names_are_shortened_with_the_full_name_in_the_tooltip():
    name = "a-very-long-step-name-that-does-not-fit"
    svg = render_svg(lay_out(shapes({name: []})), title="t")
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert any(text and text.endswith("…") and len(text) <= 21 for text in texts)
    assert name in svg


def test_an_empty_workflow_draws_an_empty_picture():
    drawing = lay_out([])
    assert drawing.boxes == ()
    assert drawing.width > 0
    assert drawing.height > 0
    ET.fromstring(render_svg(drawing, title="empty"))


@st.composite
def dags(draw):
    size = draw(st.integers(min_value=1, max_value=40))
    seed = draw(st.integers(min_value=0, max_value=10_000))
    rng = random.Random(seed)
    names = [f"s{i}" for i in range(size)]
    return {name: rng.sample(names[:i], min(i, rng.randint(0, 3))) for i, name in enumerate(names)}


@settings(max_examples=60, deadline=None)
@given(dags())
def test_no_two_boxes_overlap_and_every_need_is_an_arrow(needs):
    drawing = lay_out(shapes(needs))
    assert {box.name for box in drawing.boxes} == set(needs)
    placed = sorted((box.x, box.y) for box in drawing.boxes)
    assert len(set(placed)) == len(placed)
    for box in drawing.boxes:
        assert box.x >= 0
        assert box.x + BOX_WIDTH <= drawing.width
        assert box.y >= 0
        assert box.y + BOX_HEIGHT <= drawing.height
    edges = {(arrow.source, arrow.target) for arrow in drawing.arrows}
    assert edges == {(parent, name) for name, parents in needs.items() for parent in parents}
    for arrow in drawing.arrows:
        xs = [x for x, _ in arrow.points]
        assert xs == sorted(xs)  # always left to right
