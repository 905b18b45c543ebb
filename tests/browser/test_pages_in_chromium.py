"""The admin pages in a real browser: the editor, the Run form, the live run page, approvals,
cancel. Every wait is on something the page shows (Playwright's `expect`), never a sleep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.utils.text import slugify

from runs import services
from runs.models import Run
from tests.browser.conftest import screenshot

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed: pip install -e '.[dev]'"
).expect

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EDITED = """\
name: browser-editor
description: Edited in the browser
steps:
  hello: {type: shell, run: echo hello}
  after: {type: noop, needs: [hello]}
"""

GATED_FILE = """
name: browser-pipeline
description: Waits for a file the test creates, then greets
input:
  type: object
  properties:
    gate: {type: string, description: "A file to wait for"}
    who: {type: string, default: nobody}
  required: [gate]
steps:
  wait:
    type: shell
    timeout: 60s
    run: 'echo "waiting for the gate"; while [ ! -e {{ input.gate }} ]; do sleep 0.05; done; echo "gate open"'
  greet:
    type: shell
    needs: [wait]
    run: 'echo "hello {{ input.who }}"'
  done:
    type: noop
    needs: [greet]
"""

APPROVAL = """
name: browser-release
steps:
  build: {type: shell, run: 'echo built'}
  sign-off:
    type: approval
    needs: [build]
    with: {message: "Ship the browser build?"}
  ship: {type: shell, needs: [sign-off], run: 'echo shipped'}
"""

LONG = """
name: browser-long
steps:
  nap: {type: shell, run: 'echo "napping"; sleep 60'}
  after: {type: noop, needs: [nap]}
"""


def live(page: Any) -> Any:
    return page.locator("#run-live")


def box(page: Any, step: str) -> Any:
    return page.locator(f'svg.furrow-graph g.step[data-step="{step}"]')


def mark_page(page: Any) -> None:
    """A marker that a reload or a navigation would wipe out."""
    page.evaluate("window.__furrowMarker = 'still here'")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__furrowMarker") == "still here"


def test_the_editor_shows_problems_as_you_type_and_publishes_a_new_version(page, publish):
    publish("name: browser-editor\nsteps:\n  hello: {type: shell, run: echo hello}\n")
    page.goto("/admin/workflows/browser-editor/")
    screenshot(page, "workflow")
    mark_page(page)

    editor = page.locator("textarea#definition")
    editor.fill(EDITED.replace("needs: [hello]", "needs: [missing]"))
    problem = page.locator("#problems ul.problems li")
    expect(problem).to_have_count(1)
    expect(problem.locator("code.path")).to_have_text("steps.after.needs[0]")
    expect(problem).to_contain_text("unknown step 'missing'")

    editor.fill(EDITED)
    expect(page.locator("#problems p.valid")).to_be_visible()
    expect(page.locator("#problems ul.problems")).to_have_count(0)
    assert_not_reloaded(page)

    page.locator("#editor-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/admin/workflows/browser-editor/$"))
    latest = page.locator("table.versions tbody tr").first
    expect(latest.locator("th")).to_have_text("v2 (latest)")
    expect(page.locator("p.lead")).to_have_text("Edited in the browser")
    expect(page.locator('svg.furrow-graph g.step[data-step="after"]')).to_have_count(1)


def test_a_run_started_from_the_form_turns_green_live_and_streams_its_log(
    page, publish, tmp_path: Path
):
    publish(GATED_FILE)
    gate = tmp_path / "gate"
    page.goto("/admin/workflows/browser-pipeline/")
    page.fill('#run-form [name="input-gate"]', str(gate))
    page.fill('#run-form [name="input-who"]', "Chromium")
    page.locator("#run-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/admin/runs/[0-9a-f-]{36}/$"))
    run = Run.objects.get()
    assert run.input == {"gate": str(gate), "who": "Chromium"}

    expect(box(page, "wait")).to_have_attribute("data-status", "running")
    expect(page.locator("#log-view .line", has_text="waiting for the gate")).to_have_count(1)
    expect(live(page)).to_have_attribute("data-final", "false")
    mark_page(page)
    screenshot(page, "run-running")

    gate.touch()  # the step sees it and ends; the page learns of it through the event stream
    for step in ("wait", "greet", "done"):
        expect(box(page, step)).to_have_attribute("data-status", "succeeded")
    expect(live(page)).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#log-view .line", has_text="hello Chromium")).to_have_count(1)
    expect(page.locator("#log-view .line", has_text="gate open")).to_have_count(1)
    assert_not_reloaded(page)
    screenshot(page, "run-succeeded")

    page.select_option("#log-step", "greet")
    expect(page.locator("#log-view .line:visible")).to_have_count(1)
    expect(page.locator("#log-view .line:visible")).to_have_text(re.compile("hello Chromium"))


def test_an_approval_appears_on_the_run_page_and_approving_completes_the_run(page, publish):
    workflow = publish(APPROVAL)
    run = services.start_run(workflow, {})
    page.goto(f"/admin/runs/{run.pk}/")
    approvals = page.locator("#run-approvals")
    expect(approvals).to_contain_text("Ship the browser build?")
    expect(box(page, "sign-off")).to_have_attribute("data-status", "waiting")
    screenshot(page, "run-waiting-for-approval")

    approvals.get_by_role("button", name="Approve").click()
    expect(live(page)).to_have_attribute("data-status", "succeeded")
    expect(box(page, "ship")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#run-approvals")).to_have_count(0)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.approvals.get().decided_by.get_username() == "alice"


def test_a_long_run_is_cancelled_from_the_run_page(page, publish):
    workflow = publish(LONG)
    run = services.start_run(workflow, {})
    page.goto(f"/admin/runs/{run.pk}/")
    expect(box(page, "nap")).to_have_attribute("data-status", "running")
    expect(page.locator("#log-view .line", has_text="napping")).to_have_count(1)

    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel run").click()
    expect(live(page)).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(box(page, "nap")).to_have_attribute("data-status", "cancelled")
    assert dialogs == ["Cancel this run? Running steps are stopped."]
    run.refresh_from_db()
    assert run.status == "cancelled"
    screenshot(page, "run-cancelled")


def test_the_main_pages_render_and_are_saved_as_screenshots(page, publish):
    """Every page in Furrow's navigation, with something in them: a finished run and one that
    waits for an approval (the dashboard and the inbox show it)."""
    done = services.start_run(publish(LONG.replace("sleep 60", "true")), {})
    waiting = services.start_run(publish(APPROVAL), {})
    elsewhere: list[str] = []  # no CDN: every script, style, image and font comes from us
    origin = page.url.split("/admin/")[0]
    page.on(
        "request",
        lambda request: None if request.url.startswith(origin) else elsewhere.append(request.url),
    )
    page.goto(f"/admin/runs/{done.pk}/")
    expect(live(page)).to_have_attribute("data-status", "succeeded")
    page.goto(f"/admin/runs/{waiting.pk}/")
    expect(box(page, "sign-off")).to_have_attribute("data-status", "waiting")

    page.goto("/admin/")
    links = page.locator("nav.furrow-nav a")
    expect(links.first).to_be_visible()
    pages = {
        slugify(name): href
        for name, href in zip(
            links.all_inner_texts(), [a.get_attribute("href") for a in links.all()], strict=True
        )
    }
    assert {"dashboard", "workflows", "runs"} <= set(pages), pages
    for name, href in pages.items():
        response = page.goto(href)
        assert response is not None, (name, href)
        assert response.status == 200, (name, href)
        screenshot(page, name)
    assert elsewhere == []
