"""Throwing a chosen exception into a running coroutine, at its current ``await``.

asyncio can only *cancel* a task. :class:`Trampoline` wraps the task's coroutine
and passes every ``send``/``throw`` of the asyncio Task through to it, except one:
after :meth:`Trampoline.inject` has cancelled the Task, the ``CancelledError`` the
Task throws in is replaced by the injected exception (``SoftTimeLimitExceeded``,
``HardTimeLimit``, ``Terminated``). So the coroutine sees the exception exactly
where it waits, as a sync task sees it at its next bytecode or switch, and may
catch it and clean up; the Task's cancel count is taken back (``uncancel`` on
3.11+), so ``asyncio.timeout`` and TaskGroups inside the coroutine keep their
bookkeeping right. The side effects are those of a cancellation: the future the
coroutine awaited is cancelled (``gather`` cancels its children), as
``asyncio.timeout`` does.

Everything here runs on the loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def _severity(exc: BaseException) -> int:
    """An exception that ends the job (a BaseException) outranks one the task may catch."""
    return 0 if isinstance(exc, Exception) else 1


class Trampoline(Coroutine[Any, Any, Any]):
    """The coroutine of one task, as its asyncio Task drives it, with :meth:`inject`."""

    __slots__ = ("_coro", "_pending", "injected", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        #: The exception to throw in at the next CancelledError (set by inject).
        self._pending: BaseException | None = None
        #: The asyncio Task driving this trampoline (set when it is created).
        self.task: asyncio.Task[Any] | None = None
        #: The most severe exception injected so far (None: none was).
        self.injected: BaseException | None = None

    @property
    def wrapped(self) -> Coroutine[Any, Any, Any]:
        """The task's own coroutine (the loop monitor follows it to name a blocking job)."""
        return self._coro

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc: BaseException = typ if val is None else val
        if isinstance(exc, type):
            exc = exc()
        if isinstance(exc, asyncio.CancelledError) and self._pending is not None:
            exc, self._pending = self._pending, None
            uncancel = getattr(self.task, "uncancel", None)
            if uncancel is not None:
                uncancel()
        elif tb is not None:
            exc = exc.with_traceback(tb)
        return self._coro.throw(exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def inject(self, exc: BaseException) -> None:
        """Raise ``exc`` in the coroutine at its current await (on the loop's thread).

        Two injections before the coroutine ran again: the more severe one is thrown
        (one cancellation is delivered once).
        """
        task = self.task
        if task is None or task.done():
            return
        if self.injected is None or _severity(exc) >= _severity(self.injected):
            self.injected = exc
        if self._pending is not None:
            if _severity(exc) >= _severity(self._pending):
                self._pending = exc
            return
        self._pending = exc
        task.cancel()
