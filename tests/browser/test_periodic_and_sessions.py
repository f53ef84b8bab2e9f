"""The dashboard in a real browser, continued: the Periodic page with a real
``celeriac beat``, each running task's time on the Workers page, and a session that ends
while a table refreshes itself (htmx's HX-Redirect on a 401, as chromium runs it).

* an entry's last run appears, sent by the beat that holds it, and the beat disappears
  from the page when it stops;
* the Workers page says for how long each running task has run;
* a logout in another tab, or a changed password (the dashboard restarted with another
  hash, the same secret key), takes a page whose table refreshes to /login within one
  refresh, and back to that page after logging in again.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Project, Worker, wait_until

from browser.stack import (
    ADMIN_PASSWORD,
    VIEWER_PASSWORD,
    login,
    password_env,
    project_dashboard,
    start_dashboard,
    tasks_module,
)

pytest.importorskip("flask")
from playwright.sync_api import expect

#: An entry due every second (the beat's first look starts it counting).
BEAT_SCHEDULE = '''
app.conf.beat_schedule = {
    "every-second": {"task": "tasks.add", "schedule": 1.0, "args": [20, 22]},
}
'''


def start_beat(project: Project) -> Worker:
    """``celeriac -A tasks beat`` (kept in ``project.workers``, which the fixture stops)."""
    log_path = project.path / f"beat-{len(project.workers)}.log"
    argv = [sys.executable, "-m", "celeriac", "-A", "tasks", "beat", "-l", "INFO"]
    proc = subprocess.Popen(argv, cwd=project.path, env=project.env, text=True,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    beat = Worker(proc, log_path, argv)
    project.workers.append(beat)
    beat.wait_for_log("periodic task(s)", timeout=30)
    return beat


def test_an_entrys_last_run_appears_with_the_beat_that_sent_it(project_kind: Project,
                                                                page: Any) -> None:
    project = project_kind
    project.write_tasks(extra=BEAT_SCHEDULE)
    dashboard = project_dashboard(project)
    try:
        login(page, dashboard.url, VIEWER_PASSWORD)
        page.goto(f"{dashboard.url}/periodic")
        row = page.locator("tr[data-entry='every-second']")
        expect(row.locator("td[data-schedule]")).to_have_text("every 1 s")
        expect(row.locator("td[data-last-run]")).to_have_text("never")
        expect(row.locator("td[data-held-by]")).to_have_text("no running beat")
        expect(page.locator("[data-no-beat]")).to_be_visible()
        beat = start_beat(project)
        name = f"beat.{beat.proc.pid}@{socket.gethostname()}"
        # No reload: the table refreshes itself every 2 s.
        expect(row.locator("td[data-held-by]")).to_have_text(name, timeout=15_000)
        expect(row.locator("[data-sent-by]")).to_have_text(name, timeout=15_000)
        expect(row.locator("td[data-last-run]")).to_contain_text("UTC")
        expect(row.locator("td[data-next-run]")).to_contain_text("UTC")
        beats = page.locator(f"tr[data-beat='{name}']")
        expect(beats).to_contain_text("celeriac beat")
        expect(beats.locator("td[data-sent]")).to_have_text("1")
        assert "Sending due task every-second" in beat.log()
        status = project.status()  # celeriac status lists it as a beat, not a worker
        assert [b["name"] for b in status["beats"]] == [name] and status["workers"] == []
        beat.stop()
        expect(page.locator("[data-no-beat]")).to_be_visible(timeout=10_000)
        expect(row.locator("td[data-last-run]")).to_contain_text("UTC")  # the broker keeps it
    finally:
        dashboard.stop()


def test_the_workers_page_says_how_long_each_task_runs(project_kind: Project,
                                                       page: Any) -> None:
    project = project_kind
    project.start_worker("-P", "threads", "-c", "2")
    dashboard = project_dashboard(project)
    try:
        tasks = tasks_module(project)
        gate = project.path / f"gate-{uuid.uuid4().hex}"
        running = tasks.wait_for.delay(str(gate), 60)
        wait_until(lambda: project.queue()["in_flight"] == 1, message="the task running")
        login(page, dashboard.url, VIEWER_PASSWORD)
        page.goto(f"{dashboard.url}/workers")
        cell = page.locator(f"tr[data-running='{running.id}'] td[data-running-for]")
        expect(cell).to_have_text(re.compile(r"^for \d+(\.\d)? s$"), timeout=10_000)
        # The heartbeat's record carries the start: celeriac status --json shows it.
        entry = next(e for w in project.status()["workers"]
                     for entries in w["consumers"].values() for e in entries)
        assert entry[1] == running.id and isinstance(entry[6], float)
        gate.touch()
        assert running.get(timeout=20) == str(gate)
        expect(page.locator(f"tr[data-running='{running.id}']")).to_have_count(0)
    finally:
        dashboard.stop()


@pytest.fixture
def sqlite_dashboard(project: Project) -> Iterator[tuple[Project, dict[str, str]]]:
    env = {**project.env, **password_env(),
           "CELERIAC_DASHBOARD_SECRET_KEY": "a fixed key, so sessions outlive a restart"}
    yield project, env


def test_a_logout_in_another_tab_sends_a_refreshing_page_to_login(
        sqlite_dashboard: tuple[Project, dict[str, str]], page: Any) -> None:
    project, env = sqlite_dashboard
    dashboard = start_dashboard(project.path, env)
    try:
        login(page, dashboard.url, VIEWER_PASSWORD)
        page.goto(f"{dashboard.url}/queues")
        expect(page.locator("#queues")).to_be_visible()
        other = page.context.new_page()  # another tab: the same cookies
        other.goto(f"{dashboard.url}/workers")
        other.locator("button", has_text="Log out").click()
        expect(other).to_have_url(f"{dashboard.url}/login")
        # The first tab's table asks again within 2 s; the 401 takes the page to /login.
        expect(page).to_have_url(f"{dashboard.url}/login?next=/queues", timeout=6_000)
        page.fill("input[name=password]", VIEWER_PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{dashboard.url}/queues")
    finally:
        dashboard.stop()


def test_a_changed_password_sends_a_refreshing_page_to_login(
        sqlite_dashboard: tuple[Project, dict[str, str]], page: Any) -> None:
    from werkzeug.security import generate_password_hash

    project, env = sqlite_dashboard
    dashboard = start_dashboard(project.path, env)
    port = urlsplit(dashboard.url).port
    assert port is not None
    try:
        login(page, dashboard.url, ADMIN_PASSWORD)
        page.goto(f"{dashboard.url}/workers")
        expect(page.locator("#workers")).to_be_visible()
        # The same cookie is still signed right after a restart with the same secret key:
        # it is the changed password (its fingerprint in the session) that ends it.
        dashboard.stop()
        new_password = "a new admin password"
        env["CELERIAC_DASHBOARD_ADMIN_PASSWORD_HASH"] = generate_password_hash(
            new_password, "pbkdf2:sha256:1000")
        dashboard = start_dashboard(project.path, env, port=port)
        expect(page).to_have_url(f"{dashboard.url}/login?next=/workers", timeout=10_000)
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text("Wrong password.")
        page.fill("input[name=password]", new_password)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{dashboard.url}/workers")
        expect(page.locator(".role")).to_have_text("admin")
    finally:
        dashboard.stop()
