"""Celery's ``celery.app.task``: the :class:`~celeriac.task.Task` class, for a custom base
task (``class Base(Task): ...`` with ``@app.task(base=Base)``), and the current task's
:class:`~celeriac.context.Request` as Celery's ``Context``."""

from __future__ import annotations

from celeriac.context import Request
from celeriac.context import Request as Context
from celeriac.task import Task

__all__ = ["Context", "Request", "Task"]
