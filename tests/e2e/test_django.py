"""A real Django project (``tests/django_project``) run by the real worker.

The project is Celery's Django layout with ``celery`` replaced by ``celeriac``: its
``proj/celery.py`` calls ``app.autodiscover_tasks()`` without packages, so the worker
finds ``shop/tasks.py`` through Django's installed apps, after ``django.setup()`` -- the
tasks module imports a model, which fails unless Django was set up first. The supervisor
sets Django up when it finalizes the app (``proj/celery.py`` set ``DJANGO_SETTINGS_MODULE``),
its worker processes before they import the app (they inherit the variable); with the
variable in the environment from the start, every process sets Django up before the app. Each test copies
the project into ``tmp_path``, with its SQLite database (``PROJ_DB``) and broker there.

Checked in every pool, gevent also with ``GEVENT_PATCHTHREAD=N``: tasks write and read the
ORM; the connection a task opened is closed once it ends (the ``DjangoConnections``
middleware); concurrent tasks each have their own connection, which another task's
closing leaves alone. And ``delay_on_commit`` sends nothing when the transaction rolls
back and once when it commits (the broker is looked at before any worker runs).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, stop_project, wait_until
from redisserver import in_ci

try:
    import django  # noqa: F401
except ImportError:  # pragma: no cover - the test extra installs Django
    if in_ci():
        pytest.fail("Django is not installed: CI=true runs the Django tests (pip install "
                    "-e '.[test]')", pytrace=False)
    pytest.skip("Django is not installed (pip install -e '.[test]')", allow_module_level=True)

SOURCE = Path(__file__).resolve().parent.parent / "django_project"


class Site(Project):
    """The Django project in a temporary directory."""

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, *args], cwd=self.path, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def scenario(self, *args: str) -> Any:
        """``scenarios.py`` (what a Django view would do) and the JSON it printed."""
        return json.loads(self.run("scenarios.py", *args).stdout.strip().splitlines()[-1])

    def order_names(self) -> list[str]:
        """The orders as the database file holds them, read without Django."""
        with sqlite3.connect(self.path / "db.sqlite3") as db:
            return sorted(name for (name,) in db.execute("SELECT name FROM shop_order"))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = tmp_path / "site"
    shutil.copytree(SOURCE, path, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3",
                                                                "*.db"))
    broker_url = f"sqlite:///{tmp_path / 'broker.db'}"
    # Not DJANGO_SETTINGS_MODULE: proj/celery.py sets it, as Celery's template does.
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    monkeypatch.setenv("PROJ_DB", str(path / "db.sqlite3"))
    monkeypatch.setenv("PROJ_BROKER_URL", broker_url)
    site = Site(path, broker_url)
    site.run("manage.py", "migrate", "--noinput")
    yield site
    stop_project(site)


POOLS = [
    pytest.param("prefork", "2", {}, id="prefork"),
    # Set in the environment: Django is set up before the -A app is imported, everywhere.
    pytest.param("threads", "3", {"DJANGO_SETTINGS_MODULE": "proj.settings"}, id="threads"),
    pytest.param("gevent", "3", {}, id="gevent"),
    pytest.param("gevent", "3", {"GEVENT_PATCHTHREAD": "N"}, id="gevent-patchthread-N"),
    pytest.param("eventlet", "3", {}, id="eventlet"),
]


@pytest.mark.parametrize(("pool", "concurrency", "env"), POOLS)
def test_tasks_use_the_orm_and_close_their_connections(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                       pool: str, concurrency: str,
                                                       env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = site.start_worker("-P", pool, "-c", concurrency, app="proj")

    sent = site.scenario("send", "4")
    names = [f"order-{i}" for i in range(4)]
    assert len(set(sent["pks"])) == 4
    assert sent["names"] == names  # read back through the ORM by a task
    assert site.order_names() == names  # and in the database file

    # Each call finds the connections earlier calls in its process opened: all closed.
    checks = site.scenario("checks", "6")
    found = [closed for check in checks for closed in check["closed"]]
    processes = len({check["pid"] for check in checks})
    assert len(found) >= 6 - processes
    assert all(found), checks

    # Concurrent tasks, each with its connection open while the others start and end.
    probes = site.scenario("probes", concurrency, "0.5")
    assert all(result["still_ours"] for result in probes), probes
    if pool != "prefork":  # one process: every task had a connection of its own
        assert len({result["raw"] for result in probes}) == len(probes), probes
    assert worker.stop() == 0
    assert "Traceback" not in worker.log()


def test_delay_on_commit_sends_only_when_the_transaction_commits(site: Site) -> None:
    rolled_back = site.scenario("rolled_back", "rb")
    assert rolled_back == {"rows": 0}  # the transaction did roll back
    assert site.queue(app="proj")["ready"] == 0  # and sent nothing

    committed = site.scenario("committed", "c")
    assert "DjangoTask" in committed["task_class"]  # the fixup's default task class
    assert site.queue(app="proj")["ready"] == 2  # delay_on_commit and apply_async_on_commit, once

    site.start_worker("-P", "threads", "-c", "2", app="proj")
    wait_until(lambda: site.order_names() == ["c", "c-async"], message="committed orders")
    wait_until(lambda: site.queue(app="proj")["ready"] == 0, message="queue drained")
    assert site.order_names() == ["c", "c-async"]
