"""Celery's ``celery.utils`` names that applications import, where celeriac has them:
:func:`uuid` here, and :mod:`celeriac.utils.log` (``get_task_logger``, ``get_logger``)."""

from __future__ import annotations

import os

#: The variant digit of an RFC 4122 UUID: 10xx in binary, from any random hex digit.
_VARIANT = "89ab" * 4


def uuid() -> str:
    """A new random task id, as a string (Celery's ``celery.uuid``, also ``celery.utils.uuid``):
    ``apply_async(task_id=uuid())`` lets a caller know the id before the task is sent.

    The same random version 4 UUID as ``str(uuid.uuid4())`` (16 bytes from
    ``os.urandom``, version and variant set), written without building a ``UUID``
    object: a third of the time, and every message sent takes one."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


__all__ = ["uuid"]
