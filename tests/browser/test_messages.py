"""The Queues page's pause and resume and the message listings in a real browser, each on
SQLite and on Redis, with a real CLI worker and a real ``celeriac dashboard`` subprocess:

* requeue from the dead letters runs the task (through the confirmation page);
* a viewer cannot requeue: no link shown, and the server refuses the confirmation page
  and the action itself (403); the letter stays;
* pause from the Queues page stops the worker serving that queue (a task sent while
  paused waits, while the same worker serves its other queue) and resume starts it again;
* pagination shows the right total and a second page.
"""

from __future__ import annotations

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

#: ``picky`` dead-letters its message (Reject) until its flag file exists, then succeeds.
EXTRA = '''
from celeriac.exceptions import Reject

@app.task
def picky(flag):
    if not os.path.exists(flag):
        raise Reject("no flag yet", requeue=False)
    return "ran"
'''


@pytest.fixture
def stack(project_kind: Project) -> Iterator[tuple[Project, Dashboard]]:
    """A project, a worker of one process consuming ``celery``, ``held`` and ``side``, and
    a dashboard."""
    with serving(project_kind, EXTRA, "-P", "threads", "-c", "2", "--processes", "1",
                 "-Q", "celery,held,side") as dashboard:
        yield project_kind, dashboard


def _bury(project: Project) -> tuple[Any, Any]:
    """A ``picky`` task dead-lettered by the worker; its result and its flag's path."""
    tasks = tasks_module(project)
    flag = project.path / "flag"
    result = tasks.picky.delay(str(flag))
    wait_until(lambda: project.queue()["dead"] == 1, timeout=30, message="the dead letter")
    return result, flag


def test_requeue_from_the_dead_letters_runs_the_task(stack: tuple[Project, Dashboard],
                                                     page: Any) -> None:
    project, dashboard = stack
    result, flag = _bury(project)
    wait_until(lambda: result.state == "FAILURE", message="the rejection stored")
    flag.touch()
    login(page, dashboard.url, ADMIN_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    page.locator("tr[data-queue='celery'] td[data-count=dead] a").click()
    row = page.locator(f"#messages tr[data-task-id='{result.id}']")
    expect(row).to_contain_text("no flag yet")
    row.locator("a[data-action=requeue]").click()
    expect(page.locator("form.confirm")).to_contain_text("the 1 chosen dead letter(s) of queue celery")
    assert project.queue()["dead"] == 1  # nothing happens before the confirmation
    page.locator("form.confirm button", has_text="Requeue").click()
    expect(page.locator(".flash")).to_have_text("Requeued 1 dead letter(s) of celery.")
    expect(page.locator("#total")).to_have_text("0")
    assert result.get(timeout=30) == "ran"
    page.goto(f"{dashboard.url}/tasks/{result.id}")
    expect(page.locator(".state")).to_have_text("SUCCESS")


def test_a_viewer_cannot_requeue(stack: tuple[Project, Dashboard], page: Any) -> None:
    project, dashboard = stack
    result, flag = _bury(project)
    flag.touch()  # were it requeued, it would run and leave the dead letters
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/dead?queue=celery")
    expect(page.locator(f"#messages tr[data-task-id='{result.id}']")).to_be_visible()
    expect(page.locator("a[data-action], button[data-action]")).to_have_count(0)
    letter = page.locator("#messages tbody tr").first.get_attribute("data-id")
    assert page.request.get(f"{dashboard.url}/dead/requeue?queue=celery&id={letter}").status == 403
    for form in ({"queue": "celery", "id": letter}, {"queue": "celery", "all": "1"}):
        assert page.request.post(f"{dashboard.url}/dead/requeue", form=form,
                                 headers={"Origin": dashboard.url}).status == 403
    assert project.queue()["dead"] == 1
    assert result.state == "FAILURE"


def test_pause_stops_the_worker_and_resume_starts_it(stack: tuple[Project, Dashboard],
                                                     page: Any) -> None:
    project, dashboard = stack
    worker = project.workers[0]
    tasks = tasks_module(project)
    login(page, dashboard.url, ADMIN_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    row = page.locator("tr[data-queue='held']")  # shown empty: a live worker consumes it
    row.locator("button[data-action=pause]").click()
    expect(page.locator(".flash")).to_contain_text("Paused held")
    expect(row.locator(".paused")).to_have_text("paused")
    worker.wait_for_log("queue held is paused")
    waiting = tasks.add.apply_async((1, 2), queue="held")
    served = tasks.add.apply_async((3, 4), queue="side")
    assert served.get(timeout=30) == 7  # the same worker process fetches after the pause
    assert waiting.state == "PENDING"
    expect(row.locator("td[data-count=ready]")).to_have_text("1")
    row.locator("button[data-action=resume]").click()
    expect(page.locator(".flash")).to_have_text("Resumed held.")
    assert waiting.get(timeout=30) == 3
    worker.wait_for_log("queue held was resumed")
    expect(row.locator(".paused")).to_have_count(0)


def test_pagination_shows_the_total_and_a_second_page(stack: tuple[Project, Dashboard],
                                                      page: Any) -> None:
    project, dashboard = stack
    tasks = tasks_module(project)
    sent = [tasks.add.apply_async((n, n), countdown=3600 + n, queue="later").id
            for n in range(57)]
    login(page, dashboard.url, VIEWER_PASSWORD)
    page.goto(f"{dashboard.url}/queues")
    page.locator("tr[data-queue='later'] td[data-count=scheduled] a").click()
    expect(page.locator("h1")).to_have_text("Scheduled of later")
    expect(page.locator("#total")).to_have_text("57")
    expect(page.locator(".summary")).to_contain_text("1\u201350 of 57")
    rows = page.locator("#messages tbody tr")
    expect(rows).to_have_count(50)
    assert rows.first.get_attribute("data-task-id") == sent[0]  # due first
    page.locator("nav.pages a", has_text="2").click()
    expect(page.locator(".summary")).to_contain_text("51\u201357 of 57")
    expect(rows).to_have_count(7)
    assert [rows.nth(n).get_attribute("data-task-id") for n in range(7)] == sent[50:]
    expect(page.locator("nav.pages .current")).to_have_text("2")
