"""The dashboard in a real browser: the issue's scenarios that today's pages allow, each on
SQLite and on Redis, with a real CLI worker (task events on, ``-E``) and a real
``celeriac dashboard`` subprocess.

* login is required, and a wrong password is refused;
* a viewer cannot purge or revoke: the buttons are not shown, and the server refuses the
  requests themselves;
* a queue's count changes within 5 s of enqueueing (the table refreshes itself);
* the live tail shows a task's events;
* revoke (and terminate) from a task's page stops it;
* markup in a task's arguments is inert: shown as text, no script runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Project, wait_until

from browser.stack import (
    ADMIN_PASSWORD,
    VIEWER_PASSWORD,
    Dashboard,
    login,
    serving,
    tasks_module,
)

pytest.importorskip("flask")
from playwright.sync_api import expect

#: The project's app stores arguments with results (the task page shows them).
EXTRA = '''
app.conf.result_extended = True

@app.task
def concat(a, b):
    return str(a) + str(b)
'''


@pytest.fixture
def stack(project_kind: Project) -> Iterator[tuple[Project, Dashboard]]:
    with serving(project_kind, EXTRA, "-E", "-P", "threads", "-c", "4") as dashboard:
        yield project_kind, dashboard


def test_login_is_required_and_a_wrong_password_refused(stack: tuple[Project, Dashboard],
                                                         page: Any) -> None:
    project, dashboard = stack
    page.goto(f"{dashboard.url}/workers")
    expect(page).to_have_url(f"{dashboard.url}/login?next=/workers")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("Wrong password.")
    page.goto(f"{dashboard.url}/workers")
    expect(page).to_have_url(f"{dashboard.url}/login?next=/workers")
    page.fill("input[name=password]", VIEWER_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{dashboard.url}/workers")
    node = project.status()["workers"][0]["name"]
    expect(page.locator(f"section.worker[data-worker='{node}']")).to_be_visible()
    expect(page.locator(".role")).to_have_text("viewer")


def test_a_viewer_cannot_act(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    waiting = tasks.add.apply_async((1, 2), queue="nobody-consumes")
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    row = page.locator("tr[data-queue='nobody-consumes']")
    expect(row.locator("td[data-count=ready]")).to_have_text("1")
    expect(page.locator("a", has_text="Purge")).to_have_count(0)
    page.goto(f"{dashboard.url}/tasks/{waiting.id}")
    expect(page.locator("button", has_text="Revoke")).to_have_count(0)
    # The server itself refuses, whatever a viewer's browser sends (its own origin, its cookie).
    origin = {"Origin": dashboard.url}
    assert page.request.post(f"{dashboard.url}/queues/nobody-consumes/purge",
                             headers=origin).status == 403
    assert page.request.post(f"{dashboard.url}/tasks/{waiting.id}/revoke",
                             form={"terminate": "1"}, headers=origin).status == 403
    assert project.queue("nobody-consumes")["ready"] == 1
    assert tasks.app.broker.revocations() == []


def test_an_admin_purges_a_queue(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    for n in range(3):
        tasks.add.apply_async((n, n), queue="to-purge")
    login(page, dashboard.url, ADMIN_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    row = page.locator("tr[data-queue='to-purge']")
    expect(row.locator("td[data-count=ready]")).to_have_text("3")
    row.locator("a", has_text="Purge").click()
    page.locator("button", has_text="Purge").click()
    expect(page.locator(".flash")).to_have_text("Purged 3 message(s) from to-purge.")
    expect(row.locator("td[data-count=ready]")).to_have_text("0")
    assert project.queue("to-purge")["ready"] == 0


def test_a_queues_count_changes_within_5_s(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    tasks.add.apply_async((0, 0), queue="watched")
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    ready = page.locator("tr[data-queue='watched'] td[data-count=ready]")
    expect(ready).to_have_text("1")
    for n in range(2):
        tasks.add.apply_async((n, n), queue="watched")
    expect(ready).to_have_text("3", timeout=5_000)  # no reload: the table refreshes itself


def test_the_live_tail_shows_a_tasks_events(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/live")
    expect(page.locator("#live-status")).to_have_text("live")
    result = tasks.add.delay(20, 22)
    assert result.get(timeout=20) == 42
    for kind in ("task-received", "task-started", "task-succeeded"):
        expect(page.locator(f"#live tr[data-type='{kind}'] a[data-task-id='{result.id}']")
               ).to_have_count(1)


def test_revoke_from_a_tasks_page_stops_it(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    gate = project.path / f"never-{uuid.uuid4().hex}"
    running = tasks.wait_for.delay(str(gate), 60)
    wait_until(lambda: project.queue()["in_flight"] == 1, message="the task running")
    login(page, dashboard.url, ADMIN_PASSWORD)
    page.goto(f"{dashboard.url}/tasks/{running.id}")
    page.locator("button", has_text="Revoke and terminate").click()
    expect(page.locator(".flash")).to_contain_text("revoked and terminated")
    wait_until(lambda: running.state == "REVOKED", message=f"{running.id} REVOKED")
    page.reload()
    expect(page.locator(".state")).to_have_text("REVOKED")
    assert not gate.exists()


def test_markup_in_arguments_is_inert(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    script = "<script>window.pwned = 'script'</script>"
    image = "<img src=x onerror=alert('img')>"
    result = tasks.concat.delay(script, image)
    assert result.get(timeout=20) == script + image
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/live")
    expect(page.locator(f"#live a[data-task-id='{result.id}']").first).to_be_visible()
    expect(page.locator("#live td", has_text="onerror").first).to_be_visible()
    assert page.locator("main img").count() == 0
    page.goto(f"{dashboard.url}/tasks/{result.id}")
    expect(page.locator(".state")).to_have_text("SUCCESS")
    expect(page.locator("pre.args").first).to_contain_text(script)
    expect(page.locator("pre.args").first).to_contain_text(image)
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
