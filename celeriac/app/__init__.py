"""The application: :class:`Celeriac` (alias ``Celery``) in :mod:`celeriac.app.base`.

A package, as Celery's ``celery.app`` is, so that what Celery apps import from it works
after ``celery`` becomes ``celeriac``: ``celeriac.app.task.Task`` (a custom base task
class) and ``celeriac.app.control.Control``/``Inspect``.
"""

from __future__ import annotations

from celeriac.app.base import Celeriac, Celery

__all__ = ["Celeriac", "Celery"]
