"""Celery's ``celery.utils`` names that applications import, where celeriac has them:
:func:`uuid` here, and :mod:`celeriac.utils.log` (``get_task_logger``, ``get_logger``)."""

from __future__ import annotations

import uuid as _uuid


def uuid() -> str:
    """A new random task id, as a string (Celery's ``celery.uuid``, also ``celery.utils.uuid``):
    ``apply_async(task_id=uuid())`` lets a caller know the id before the task is sent."""
    return str(_uuid.uuid4())


__all__ = ["uuid"]
