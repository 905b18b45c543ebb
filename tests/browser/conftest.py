"""Browser fixtures: real headless Chromium (Debian's, driven by Playwright) against a real Furrow.

The server is tests/e2e's launcher (`manage.py serve`: daphne, a qcluster and the tick loop) on the
test database. Without Chromium the tests are skipped with the reason, unless
FURROW_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password

from tests.e2e.conftest import Launcher

INSTALL_HINT = "apt-get install -y chromium"
SCREENSHOTS = settings.BASE_DIR / "var" / "screenshots"
TIMEOUT_MS = 20_000
"""How long an expectation waits; generous for a busy 2-core machine."""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright not installed: pip install -e '.[dev]'"
    if chromium_path() is None:
        return f"chromium not installed: {INSTALL_HINT}"
    return None


@pytest.fixture(scope="package")
def browser(django_db_setup: Any) -> Iterator[Any]:
    """One headless Chromium for these tests; skips (or fails, in CI) when there is none.

    Playwright's sync API keeps an asyncio loop running in this thread while it is open, and
    Django refuses database calls beside a running loop; so the test database is set up before
    it starts, the browser closes when this package is done (tests elsewhere see no loop), and
    meanwhile Django's calls are allowed: they are synchronous; only the loop's presence trips
    Django's check.
    """
    missing = _missing()
    if missing is not None:
        if os.environ.get("FURROW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing} (FURROW_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        # Root (CI) cannot use Chromium's sandbox.
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(autouse=True)
def fast_passwords() -> None:
    # Overrides tests/conftest.py's: the server checks the password with its own hashers, which
    # do not include the fast test hasher.
    return None


@pytest.fixture(scope="package")
def alice_password() -> str:
    """alice-pw hashed once with the server's default hasher (it costs a good part of a second)."""
    return make_password("alice-pw")


@pytest.fixture
def alice(django_user_model: Any, alice_password: str) -> Any:
    """tests/conftest.py's alice (a staff superuser), with a password the server can check."""
    return django_user_model.objects.create(
        username="alice",
        email="alice@example.com",
        password=alice_password,
        is_staff=True,
        is_superuser=True,
    )


@pytest.fixture(scope="package")
def launcher(
    browser: Any, django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """One Furrow for these tests: starting one costs seconds, a test's data is flushed anyway.

    Requests `browser` first, so a skip starts nothing.
    """
    launcher = Launcher(tmp_path_factory.mktemp("serve"))
    launcher.start()
    try:
        yield launcher
    finally:
        launcher.stop()


@pytest.fixture
def server(launcher: Launcher, transactional_db: Any) -> str:
    """Base URL of the running Furrow, on the test database (emptied after each test); started
    again if a test left it dead."""
    if not launcher.running:
        launcher.restart()
    return launcher.url


@pytest.fixture
def page(browser: Any, server: str, alice: Any) -> Iterator[Any]:
    """A page logged in to the admin as alice (a staff superuser), in a context of its own."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pw")
    page.click("input[type=submit], button[type=submit]")
    expect(page).to_have_url(f"{server}/admin/")
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """The whole page as var/screenshots/<name>.png (overwritten each run)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
