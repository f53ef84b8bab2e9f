"""A Celery-style project found by ``-A proj`` and its tasks by ``autodiscover_tasks``.

The layout of Celery's Django-less tutorial: ``proj/__init__.py`` imports the app from
``proj/celery.py``, which calls ``app.autodiscover_tasks(["proj.orders", "proj.billing"])``;
``proj/orders/tasks.py`` declares ``@shared_task`` tasks without importing the app, and
``proj.billing`` has no tasks module. ``celeriac -A proj worker`` is a real subprocess:
the worker imports ``proj.orders.tasks`` only through discovery at finalize.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator

import pytest
from conftest import Project

from celeriac import _state

CELERY_PY = """
from celeriac import Celery

app = Celery("proj", broker={broker!r}, backend={broker!r})
app.autodiscover_tasks(["proj.orders", "proj.billing"])
"""

TASKS_PY = """
from celeriac import current_app, shared_task


@shared_task
def total(prices):
    return sum(prices)


@shared_task(bind=True, name="orders.where")
def where(self):
    return {"app": self.app.main, "current": current_app.main}
"""


@pytest.fixture
def layout(project: Project) -> Iterator[Project]:
    package = project.path / "proj"
    for sub in ("orders", "billing"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .celery import app as celery_app\n\n"
                                         "__all__ = ('celery_app',)\n")
    (package / "celery.py").write_text(CELERY_PY.format(broker=project.broker_url))
    (package / "orders" / "tasks.py").write_text(textwrap.dedent(TASKS_PY))
    saved = (_state._tls.app, _state._default_app, _state._last_current)
    callbacks = list(_state._on_app_created)
    yield project
    _state._tls.app, _state._default_app, _state._last_current = saved
    _state._on_app_created[:] = callbacks
    for name in [name for name in sys.modules if name == "proj" or name.startswith("proj.")]:
        del sys.modules[name]


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_dash_a_proj_runs_shared_tasks_found_by_autodiscover(layout: Project, pool: str) -> None:
    # gevent too: its greenlets have no current app of their own (a patched thread-local),
    # so the worker's default app is what current_app is in a task there.
    worker = layout.start_worker("-P", pool, "-c", "2", app="proj")
    # Sent by name from a process that imports proj but never proj.orders.tasks.
    task_id = layout.cli("-A", "proj", "call", "orders.where").stdout.strip()
    result = json.loads(layout.cli("-A", "proj", "result", task_id, "--wait", "15").stdout)
    assert result["result"] == {"app": "proj", "current": "proj"}

    # In this process: the shared task sends with the current app, the project's.
    import proj.celery  # type: ignore[import-not-found]
    from proj.orders.tasks import total  # type: ignore[import-not-found]

    assert total.app is proj.celery.app
    assert total.delay([1, 2, 3]).get(timeout=15) == 6
    assert worker.stop() == 0
