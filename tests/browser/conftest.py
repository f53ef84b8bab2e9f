"""Browser tests: Debian's chromium, headless, driven by Playwright, against a real
``celeriac dashboard`` subprocess, a real CLI worker and a real broker (SQLite, Redis).

They run in a pytest process of their own (``./scripts/test``'s browser leg): Playwright's
sync API runs its own event loop in a greenlet, and the gevent-patched leg skips them
(tests/conftest.py). Without chromium they skip, except with ``CI=true``, where that fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Project

from browser.stack import launch_browser, missing_browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    why = missing_browser()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies shared between tests)."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture(params=["sqlite", "redis"])
def project_kind(request: pytest.FixtureRequest) -> Project:
    """A project on SQLite, then on Redis (broker and result backend)."""
    project: Project = request.getfixturevalue("project" if request.param == "sqlite"
                                               else "redis_project")
    return project
