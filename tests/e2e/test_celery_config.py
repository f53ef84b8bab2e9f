"""A project configured the way Celery's tutorial does it, run by the real command line.

``proj/celery.py`` builds ``Celery("proj", broker=..., backend=..., include=["proj.tasks"])``
and reads ``proj/celeryconfig.py`` with ``config_from_object``; nothing imports
``proj.tasks`` but the worker's finalize (from ``include``). ``celeriac -A proj worker``
and ``celeriac -A proj call`` are real subprocesses; nothing is mocked.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from conftest import Project

CELERY_PY = """
from celeriac import Celery

app = Celery("proj", broker={broker!r}, backend={broker!r}, include=["proj.tasks"])
app.config_from_object("proj.celeryconfig")
"""

CELERYCONFIG_PY = """
task_default_queue = "proj"
worker_prefetch_multiplier = 1
task_track_started = True
"""

TASKS_PY = """
from .celery import app


@app.task
def add(x, y):
    return x + y


@app.task
def seen_config():
    return {"queue": app.conf.task_default_queue, "track_started": app.conf.task_track_started,
            "include": app.conf.include}
"""


def _write_proj(project: Project) -> None:
    package = project.path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("from .celery import app as celery_app\n\n"
                                         "__all__ = ('celery_app',)\n")
    (package / "celery.py").write_text(CELERY_PY.format(broker=project.broker_url))
    (package / "celeryconfig.py").write_text(textwrap.dedent(CELERYCONFIG_PY))
    (package / "tasks.py").write_text(TASKS_PY)


def _call(project: Project, name: str, *args: str) -> str:
    return project.cli("-A", "proj", "call", name, *args).stdout.strip()


def _result(project: Project, task_id: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        project.cli("-A", "proj", "result", task_id, "--wait", "30").stdout)
    return out


def test_celery_style_project_runs_tasks_from_its_include_modules(project: Project) -> None:
    _write_proj(project)
    worker = project.start_worker("-P", "threads", "-c", "2", app="proj")
    # Sent by name from a process that never imports proj.tasks: routed by the config
    # object's task_default_queue, which the worker (supervisor and processes) reads too.
    added = _call(project, "proj.tasks.add", "--args", "[2, 3]")
    seen = _call(project, "proj.tasks.seen_config")
    assert _result(project, added)["result"] == 5
    assert _result(project, seen)["result"] == {
        "queue": "proj", "track_started": True, "include": ["proj.tasks"]}
    assert project.queue("proj", app="proj")["ready"] == 0
    registered = project.cli("-A", "proj", "inspect", "registered").stdout
    assert "proj.tasks.add" in registered and "proj.tasks.seen_config" in registered, registered
    assert worker.stop() == 0


def test_a_missing_include_module_stops_the_worker_with_one_line(project: Project) -> None:
    _write_proj(project)
    (project.path / "proj" / "celery.py").write_text(
        CELERY_PY.format(broker=project.broker_url).replace('"proj.tasks"', '"proj.nothere"'))
    proc = project.cli("-A", "proj", "worker", "-P", "solo", check=False, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert errors == [f"Error: imports/include: no module named 'proj.nothere' (looked in "
                      f"{project.path} and sys.path)"], proc.stderr
