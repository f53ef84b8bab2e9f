"""Celery's ``celery.utils`` names that applications import, where celeriac has them:
:func:`uuid` here, and :mod:`celeriac.utils.log` (``get_task_logger``, ``get_logger``)."""

from __future__ import annotations

import os
import threading

#: The variant digit of an RFC 4122 UUID: 10xx in binary, from any random hex digit.
_VARIANT = "89ab" * 4
#: Random bytes are drawn for this many ids at a time: ``os.urandom`` is a system call,
#: which cost more than the rest of an id (a bulk send takes thousands).
_IDS_PER_DRAW = 256


class _Randomness:
    """Hex digits from ``os.urandom``, drawn in blocks and handed out once each (a lock
    between threads; drawn again in a forked child, so parent and child never share)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A new lock too: one another thread held at the fork would stay held in the child.
        self._lock = threading.Lock()
        self._digits, self._at = "", 0

    def take32(self) -> str:
        with self._lock:
            at = self._at
            if at >= len(self._digits):
                self._digits, at = os.urandom(16 * _IDS_PER_DRAW).hex(), 0
            self._at = at + 32
            return self._digits[at:at + 32]


_random = _Randomness()


def uuid() -> str:
    """A new random task id, as a string (Celery's ``celery.uuid``, also ``celery.utils.uuid``):
    ``apply_async(task_id=uuid())`` lets a caller know the id before the task is sent.

    The same random version 4 UUID as ``str(uuid.uuid4())`` (16 bytes from
    ``os.urandom``, version and variant set), written without building a ``UUID``
    object, from bytes drawn for many ids at once: 0.9 us against 2.5 us here, and
    every message sent takes one."""
    h = _random.take32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


__all__ = ["uuid"]
