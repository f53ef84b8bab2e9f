"""What the browser tests and ``scripts/screenshots`` start: a real ``celeriac dashboard``
subprocess, and Debian's chromium driven by Playwright (never ``playwright install``);
and the set-up the browser tests share (:func:`serving`, :func:`tasks_module`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Project

#: Debian's chromium (``./scripts/test`` installs it when missing).
CHROMIUM = os.environ.get("CELERIAC_CHROMIUM", "/usr/bin/chromium")
#: Flags for a headless chromium that phones nowhere (Playwright gives each launch a fresh
#: temporary profile, the user-data-dir, of its own).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ADMIN_PASSWORD = "admin password for tests"
VIEWER_PASSWORD = "viewer password for tests"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium; ./scripts/test does)"
    return None


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def password_env() -> dict[str, str]:
    """The dashboard's environment: an admin and a viewer password (cheap hashes)."""
    from werkzeug.security import generate_password_hash

    return {
        "CELERIAC_DASHBOARD_ADMIN_PASSWORD_HASH": generate_password_hash(ADMIN_PASSWORD,
                                                                         "pbkdf2:sha256:1000"),
        "CELERIAC_DASHBOARD_VIEWER_PASSWORD_HASH": generate_password_hash(VIEWER_PASSWORD,
                                                                          "pbkdf2:sha256:1000"),
        "CELERIAC_DASHBOARD_METRICS_TOKEN": "scrape-token",
    }


@dataclass
class Dashboard:
    """A ``celeriac dashboard`` subprocess listening on ``url``."""

    proc: subprocess.Popen[str]
    log_path: Path
    url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_dashboard(cwd: Path, env: dict[str, str], app: str = "tasks",
                    timeout: float = 30.0, port: int = 0) -> Dashboard:
    """Start ``celeriac -A app dashboard --port PORT`` (0: any free port) and wait for the
    address it prints."""
    log_path = cwd / "dashboard.log"
    proc = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", app, "dashboard",
                             "--port", str(port)],
                            cwd=cwd, env=env, text=True, stdout=log_path.open("w"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"celeriac dashboard on (http\S+)/", log_path.read_text())
        if found:
            return Dashboard(proc, log_path, found.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the dashboard did not start:\n{log_path.read_text()}")


def login(page: Any, url: str, password: str) -> None:
    """Log in with ``password`` and wait until the dashboard has granted it.

    Waiting matters: a ``page.goto`` made while the login's POST is still in flight
    cancels it, the session cookie is never set, and the next page is the login form
    (seen in CI, where checking the password's hash took longer under load)."""
    from playwright.sync_api import expect

    page.goto(f"{url}/login")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("form.logout button")).to_be_visible(timeout=20_000)


def project_dashboard(project: Project, **kwargs: Any) -> Dashboard:
    """A dashboard of ``project``'s ``tasks`` app, with the test passwords."""
    return start_dashboard(project.path, {**project.env, **password_env()}, **kwargs)


@contextmanager
def serving(project: Project, extra: str, *worker_args: str) -> Iterator[Dashboard]:
    """``project`` with ``extra`` added to its tasks module, a CLI worker started with
    ``worker_args``, and a dashboard, stopped on leaving (the project's fixture stops the
    worker)."""
    project.write_tasks(extra=extra)
    project.start_worker(*worker_args)
    dashboard = project_dashboard(project)
    try:
        yield dashboard
    finally:
        dashboard.stop()


def tasks_module(project: Project) -> Any:
    """The project's ``tasks`` module, imported afresh in the test process (to send tasks)."""
    project.app()
    return sys.modules["tasks"]
