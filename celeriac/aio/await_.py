"""A pool's slot awaiting a coroutine on the process's loop: :func:`run_coroutine`.

The slot (a thread, the main thread, a greenlet) schedules the coroutine on the
shared loop (:mod:`celeriac.aio.loop`) with its own ``contextvars`` (so
``self.request`` is right inside), then waits on an event its pool made
(``Pool.threadsafe_event()``) -- a thread in short slices, so that whatever the pool
raises in it reaches it: ``SoftTimeLimitExceeded`` from a watchdog or ``SIGALRM``, a
gevent or eventlet timeout, ``Terminated``, a greenlet kill. **The slot forwards what it
is hit with**: it throws the same exception into the coroutine at its current await
(:class:`~celeriac.aio.trampoline.Trampoline`) and

* for an ``Exception`` (a soft limit), keeps waiting: the coroutine may catch it,
  clean up and return a value, or let it end the run as it would a sync task;
* for a ``BaseException`` that ends the job (``HardTimeLimit``, ``Terminated``,
  ``GreenletExit``), waits :data:`UNWIND` seconds for the coroutine to unwind, then
  re-raises it. A coroutine that has not ended by then holds the loop (a blocking
  call) or refuses to end: the slot keeps waiting, the run is never reported as
  ended, and the supervisor replaces the process at its own deadline, naming the task.
  (``KeyboardInterrupt`` and ``SystemExit`` are re-raised after ``UNWIND`` all the same.)

``hard``: a hard limit the slot enforces itself (pools whose hard limit is the
supervisor's: threads, solo, prefork), with the same rule. :func:`interrupt` lets
``revoke(terminate=True)`` reach a running coroutine on any pool.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Coroutine
from typing import Any

from celeriac.aio.loop import LoopThread, shared_loop
from celeriac.aio.monitor import forget_job, register_job
from celeriac.aio.trampoline import Trampoline
from celeriac.blocking import native_ident
from celeriac.context import current_request
from celeriac.exceptions import HardTimeLimit
from celeriac.pools.base import EventLike, JobInfo

#: Seconds between two looks of a waiting slot: how late a thread sees an exception
#: raised in it with ``PyThreadState_SetAsyncExc`` (soft limit, terminate).
SLICE = 0.05
#: Seconds a coroutine gets to unwind after an exception that ends its run, before
#: the slot decides the loop is blocked (less than the supervisor's grace: see
#: ``ASYNC_LIMIT_GRACE`` in :mod:`celeriac.worker.supervisor`).
UNWIND = 0.5

#: id(request) -> the trampoline of that request's running coroutine (for :func:`interrupt`).
_running: dict[int, Trampoline] = {}


def run_coroutine(coro: Coroutine[Any, Any, Any], *, event: EventLike,
                  hard: float | None = None, name: str | None = None,
                  job: JobInfo | None = None) -> Any:
    """Run ``coro`` on this process's loop and wait for it here; its value, or its
    exception raised here. See the module docstring for what reaches it meanwhile.

    ``job``: the worker's job running it, named by the loop's blocking monitor
    (:mod:`celeriac.aio.monitor`) when the coroutine holds the loop."""
    trampoline = Trampoline(coro)
    shared = shared_loop()
    if shared.ident == native_ident():
        # Called from a coroutine on the loop itself (an eager apply() inside an async
        # task): waiting here would block the loop it waits for. A loop of its own.
        own = LoopThread()
        try:
            return _run_on(own, trampoline, event, hard, name, job)
        finally:
            own.stop()
    return _run_on(shared, trampoline, event, hard, name, job)


def _run_on(thread: LoopThread, trampoline: Trampoline, event: EventLike, hard: float | None,
            name: str | None, job: JobInfo | None) -> Any:
    run = _Start(thread.loop, contextvars.copy_context(), trampoline, name, job, event)
    request = current_request.get()
    key = id(request) if request is not None else 0
    if key:
        _running[key] = trampoline
    try:
        thread.soon(run.start)
        _wait(trampoline, event, run.loop, hard)
    finally:
        if key and _running.get(key) is trampoline:
            del _running[key]
    # The task and its trampoline refer to each other: let go of the cycle here, so the
    # run (its coroutine, context and request) is freed now, not by the cycle collector.
    task, trampoline.task = trampoline.task, None
    assert task is not None and task.done()
    try:
        return task.result()
    finally:
        # A failed task holds its exception, whose traceback holds this frame: without
        # this, the frame's reference to the task would make a cycle of them.
        del task


class _Start:
    """A coroutine's start and end on the loop's thread, for :func:`_run_on`: an object
    rather than two closures, whose cells a task in flight held (a thousand in flight
    at ``-c 1000``, each object one more for the cycle collector to walk)."""

    __slots__ = ("context", "event", "job", "loop", "name", "trampoline")

    def __init__(self, loop: Any, context: contextvars.Context, trampoline: Trampoline,
                 name: str | None, job: JobInfo | None, event: EventLike) -> None:
        self.loop, self.context, self.trampoline = loop, context, trampoline
        self.name, self.job, self.event = name, job, event

    def start(self) -> None:
        task = self.context.run(self.loop.create_task, self.trampoline, name=self.name)
        self.trampoline.task = task
        if self.job is not None:
            register_job(task, self.job)
        task.add_done_callback(self.ended)

    def ended(self, task: Any) -> None:
        # One done callback for all three (each one is a handle the loop schedules).
        if self.job is not None:
            forget_job(task)
        _retrieved(task)
        self.event.set()


def _retrieved(task: Any) -> None:
    """Mark the outcome read: the slot may have raised what it forwarded without reading
    it, and asyncio would log "Task exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


def _wait(trampoline: Trampoline, event: EventLike, loop: Any, hard: float | None) -> None:
    """Wait until the coroutine ended; forward what hits this slot meanwhile."""
    deadline = time.monotonic() + hard if hard else None
    while True:
        try:
            _wait_until(event, deadline)
            if event.is_set():
                return
            # The hard limit the slot enforces itself: as if the pool had raised it.
            deadline = None
            raise HardTimeLimit(f"hard time limit ({hard}s) exceeded")
        except BaseException as exc:  # forwarded into the coroutine, see the module doc
            loop.call_soon_threadsafe(trampoline.inject, exc)
            if isinstance(exc, Exception):
                continue
            # Ctrl-C or exit (an eager run in a script) is never held up for good.
            _unwind(event, forever=not isinstance(exc, KeyboardInterrupt | SystemExit))
            raise


def _wait_until(event: EventLike, deadline: float | None) -> None:
    """Until the event is set or the deadline passed. A greenlet waits in one go (its
    pool raises in it at once, and a thousand waiting greenlets waking 20 times a second
    would keep the hub busy); a thread in slices, for ``PyThreadState_SetAsyncExc``."""
    if getattr(event, "cooperative", False):
        event.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return
    while not event.wait(SLICE):
        if deadline is not None and time.monotonic() >= deadline:
            return


def _unwind(event: EventLike, forever: bool = True) -> None:
    """Give the coroutine :data:`UNWIND` seconds to end; past that, wait for good (the
    supervisor replaces the process), whatever else this slot is hit with."""
    until = time.monotonic() + UNWIND
    while True:
        try:
            if event.wait(min(SLICE, max(until - time.monotonic(), 0.0))):
                return
            if time.monotonic() >= until:
                break
        except BaseException:
            continue
    while forever:
        try:
            if event.wait(SLICE * 20):
                return
        except BaseException:
            continue


def interrupt(request: Any, exc: BaseException) -> bool:
    """Raise ``exc`` in the running coroutine of ``request`` (a terminate); False when
    none runs (not started yet, or a sync task)."""
    trampoline = _running.get(id(request))
    if trampoline is None or trampoline.task is None:
        return False
    trampoline.task.get_loop().call_soon_threadsafe(trampoline.inject, exc)
    return True


def call_and_wait(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with a coroutine it returns awaited on this process's loop
    while the caller waits (``task.map``/``starmap`` of an ``async def`` task: one
    worker calls its function for each item)."""
    value = fn(*args, **kwargs)
    if not inspect.iscoroutine(value):
        return value
    from celeriac.aio.events import threadsafe_event

    return run_coroutine(value, event=threadsafe_event())
