"""The Tasks page in a real browser: a search finds a task a real worker ran (``-E``),
and its page shows its events as a timeline and its chain's links, on SQLite and Redis
with a real ``celeriac dashboard`` subprocess."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Project, wait_until

from browser.stack import VIEWER_PASSWORD, Dashboard, login, password_env, start_dashboard

pytest.importorskip("flask")
from playwright.sync_api import expect

from celeriac.backends.search import task_events

#: A task that fails its first run and succeeds on its retry (a timeline with a retry).
EXTRA = '''
@app.task(bind=True, max_retries=2)
def charge(self, order):
    if self.request.retries == 0:
        raise self.retry(countdown=0.1)
    return "charged " + order
'''


@pytest.fixture(params=["sqlite", "redis"])
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Project, Dashboard]]:
    project: Project = request.getfixturevalue("project" if request.param == "sqlite"
                                               else "redis_project")
    project.write_tasks(extra=EXTRA)
    project.start_worker("-E", "-P", "threads", "-c", "4", "-n", "shop-1@test")
    dashboard = start_dashboard(project.path, {**project.env, **password_env()})
    yield project, dashboard
    dashboard.stop()


def test_search_finds_a_task_and_its_page_shows_the_timeline(
        stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    project.app()
    tasks = sys.modules["tasks"]
    for n in range(3):
        assert tasks.add.delay(n, n).get(timeout=20) == 2 * n
    charged = tasks.charge.delay("A-1042")
    assert charged.get(timeout=20) == "charged A-1042"
    chained = (tasks.add.s(1, 2) | tasks.add.s(10)).delay()
    assert chained.get(timeout=20) == 13
    broker = tasks.app.broker
    wait_until(lambda: len(task_events(broker, charged.id, runs=2)) >= 6,
               message="the charge's six events in the broker's log")  # published in batches

    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/tasks")
    page.fill("#search input[name=name]", "tasks.charge")
    page.fill("#search input[name=state]", "SUCCESS")
    page.locator("#search button[type=submit]").click()
    expect(page.locator("#total")).to_have_text("1")
    rows = page.locator("#tasks tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".state")).to_have_text("SUCCESS")
    rows.first.locator(f"a[href='/tasks/{charged.id}']").click()

    expect(page).to_have_url(f"{dashboard.url}/tasks/{charged.id}")
    expect(page.locator("#record .state")).to_have_text("SUCCESS")
    events = page.locator("#timeline li.event")
    expect(events).to_have_count(6)
    assert [events.nth(n).get_attribute("data-event") for n in range(6)] == [
        "task-received", "task-started", "task-retried", "task-received", "task-started",
        "task-succeeded"]
    expect(page.locator("#timeline li[data-event=task-retried]")).to_have_class("event bad")
    expect(page.locator("#timeline li[data-event=task-succeeded]")).to_contain_text(
        "charged A-1042")
    expect(events.first.locator(".worker")).to_have_text("shop-1@test")
    expect(page.locator("dd[data-retries]")).to_have_text("1")
    expect(page.locator("#result")).to_have_text('"charged A-1042"')

    # A chain: the first step's page links to the next one, which links back as parent.
    first = chained.parent
    page.goto(f"{dashboard.url}/tasks/{first.id}")
    page.locator(f"#children a[href='/tasks/{chained.id}']").click()
    expect(page).to_have_url(f"{dashboard.url}/tasks/{chained.id}")
    expect(page.locator("#result")).to_have_text("13")
    expect(page.locator(f"dd[data-parent] a[href='/tasks/{first.id}']")).to_be_visible()
