"""The helper task of embedded workers: ``celery.ping``, which returns ``"pong"``.

Celery registers it on every app (a shared task); celeriac has no shared tasks, so
:func:`register_ping` adds it to the app that needs it (the test app does it when
it is created, :func:`~celeriac.contrib.testing.worker.start_worker` when its app
lacks it). It keeps Celery's name, so code that sends ``celery.ping`` by name works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

#: Celery's name for the ping task.
PING_TASK = "celery.ping"


def ping() -> str:
    """Answer a ping: the worker that ran this fetched, ran and stored a task."""
    return "pong"


def register_ping(app: Celeriac) -> Task[[], str]:
    """The app's ``celery.ping`` task, registered now if it was not.

    Its result is stored whatever ``task_ignore_result`` says: the ping check waits
    for it.
    """
    existing = app.tasks.get(PING_TASK)
    if existing is not None:
        return existing
    task: Task[[], str] = app.task(name=PING_TASK, ignore_result=False)(ping)
    return task
