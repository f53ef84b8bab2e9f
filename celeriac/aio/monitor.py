"""Blocking detection for an asyncio event loop running on a native thread.

A coroutine that calls something blocking (``time.sleep``, a CPU loop, a
synchronous HTTP client) holds the loop: every other coroutine of the process
waits. As the gevent pool does for its hub, this module notices such a stall
*while it lasts*, names the task that causes it and shows where it blocks:

* a **ticker** on the loop (a ``call_later`` that reschedules itself every
  ``max_blocking / 4`` seconds) notes the time whenever the loop gets to it;
* a **monitor thread** (a native thread: it runs while the loop is blocked)
  looks as often. When a tick was due ``max_blocking`` seconds ago and has not
  run, the loop has been busy without a break that long: the monitor takes the
  loop thread's stack (``sys._current_frames``), finds the asyncio task whose
  coroutine is on it, and reports a :class:`~celeriac.pools.base.Stall` naming
  that task's job; it reports the same stall again, ``ended``, once the loop
  ticks again, timed from when the missed tick was due to when the ticker ran.

The ticker's own lateness is the measure, so the reported duration is a lower
bound, exact to within one tick period. A loop saturated by many short steps
that together delay the ticker past ``max_blocking`` is reported as well (its
coroutines do wait that long); the report then names whichever task was
running when the monitor looked.

The loop-side code that runs a job's coroutine registers its task with
:func:`register_job` and forgets it with :func:`forget_job` when it is done
(:func:`celeriac.aio.await_.run_coroutine` does), so that a report names the job (task
name and id). :func:`attach_monitor` starts watching a
loop thread; :func:`watch` does so once per loop thread, which is how every pool
watches the process's shared loop (``Pool.watch_loop``).

The monitor thread is a native OS thread waiting on a native lock, even in a
gevent- or eventlet-patched process: it must run while the loop -- and the hub --
is blocked, and a green primitive has no hub to switch to in that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from celeriac.blocking import native_lock, start_native_thread
from celeriac.exceptions import CeleriacError
from celeriac.pools.base import JobInfo, Stall

#: The asyncio task running each job's coroutine -> the job (registered on the loop side).
_running_jobs: dict[asyncio.Task[Any], JobInfo] = {}


def register_job(task: asyncio.Task[Any], job: JobInfo) -> None:
    """Name ``task``'s job in stall reports (any thread) until :func:`forget_job`, which
    the caller's own done callback calls: one callback per task, not one more here
    (each is a handle the loop schedules when the task ends)."""
    _running_jobs[task] = job


def forget_job(task: asyncio.Task[Any]) -> None:
    """Stop naming ``task``'s job in stall reports."""
    _running_jobs.pop(task, None)


class LoopThreadLike(Protocol):
    """What the monitor needs of a loop thread (``celeriac.aio.loop.LoopThread``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def ident(self) -> int | None: ...


class LoopMonitor:
    """Watches one loop from a native thread; reports stalls to ``on_stall``.

    ``on_stall`` runs on the monitor thread and must not wait for the loop (the
    worker process's status writer takes no lock).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, ident: int, max_blocking: float,
                 on_stall: Callable[[Stall], None]) -> None:
        self._loop = loop
        self._ident = ident
        self._max_blocking = max_blocking
        self._period = max(max_blocking / 4, 0.005)
        #: Where reports go (:func:`watch` points it at the latest pool's).
        self.on_stall = on_stall
        self._ticked = time.monotonic()
        #: The last (due, ran) of a tick that ran ``max_blocking`` or more late.
        self._gap = (0.0, 0.0)
        self._stall: Stall | None = None
        self._stall_since = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.stopped = False
        #: Held until :meth:`stop`: the monitor thread's sleep, which stop() cuts short.
        self._wake: Any = native_lock()
        self._wake.acquire()

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self._tick)
        start_native_thread(self._watch)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._wake.release()
        handle = self._handle
        if handle is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self._loop.call_soon_threadsafe(handle.cancel)

    # -- on the loop ----------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        due = self._ticked + self._period
        if now - due >= self._max_blocking:
            self._gap = (due, now)
        self._ticked = now
        if not self.stopped:
            self._handle = self._loop.call_later(self._period, self._tick)

    # -- on the monitor thread ------------------------------------------------------------
    def _watch(self) -> None:
        """Until :meth:`stop`, or until the loop is closed (the monitor ends with its loop)."""
        while not self._wake.acquire(True, self._period):
            if self._loop.is_closed():
                self.stopped = True
                return
            self.check()

    def check(self) -> None:
        """Report a stall that started, or one that ended, since the last look."""
        ticked = self._ticked
        since = ticked + self._period  # the loop has been busy since its next tick was due
        now = time.monotonic()
        if self._stall is not None:
            if self._stall_since == since:
                self._stall.seconds = now - since  # still blocked
                return
            self._finish()
        if now - since < self._max_blocking or not self._loop.is_running():
            return
        frame = sys._current_frames().get(self._ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        if self._ticked != ticked:
            return  # it ticked while we looked: over already, and that stack is not its own
        self._stall_since = since
        self._stall = Stall(_job_on(frame), now - since, stack)
        self.on_stall(self._stall)

    def _finish(self) -> None:
        stall, self._stall = self._stall, None
        if stall is None:
            return
        due, ran = self._gap
        if due == self._stall_since:
            stall.seconds = ran - due
        stall.ended = True
        self.on_stall(stall)


def _job_on(frame: FrameType | None) -> JobInfo | None:
    """The registered job whose task's coroutine is on the stack ending at ``frame``."""
    on_stack = set()
    while frame is not None:
        on_stack.add(id(frame))
        frame = frame.f_back
    for task, job in _running_jobs.copy().items():
        if any(id(f) in on_stack for f in _frames_of(task.get_coro())):
            return job
    return None


def _frames_of(awaitable: Any) -> list[FrameType]:
    """The frames of a coroutine and of what it awaits, down the ``await`` chain (a
    wrapper around the job's coroutine is then no obstacle)."""
    frames: list[FrameType] = []
    while awaitable is not None and len(frames) < 100:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaitable = (getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
                     or getattr(awaitable, "wrapped", None))  # a Trampoline's coroutine
    return frames


def attach_monitor(loop_thread: LoopThreadLike, max_blocking: float,
                   on_stall: Callable[[Stall], None]) -> LoopMonitor:
    """Start reporting stalls of ``loop_thread``'s loop longer than ``max_blocking`` seconds
    (``worker_max_blocking_time``) to ``on_stall``; ``stop()`` the monitor it returns when
    the loop stops."""
    if loop_thread.ident is None:
        raise CeleriacError("attach_monitor: the loop thread has not started yet")
    monitor = LoopMonitor(loop_thread.loop, loop_thread.ident, max_blocking, on_stall)
    monitor.start()
    return monitor


#: id(loop thread) -> (that loop thread, its monitor): one monitor per loop, see :func:`watch`.
_monitors: dict[int, tuple[LoopThreadLike, LoopMonitor]] = {}
_monitors_guard: Any = native_lock()


def _forget_after_fork() -> None:
    """A forked child has neither the parent's loop thread nor its monitor thread."""
    global _monitors_guard
    _monitors.clear()
    _monitors_guard = native_lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def watch(loop_thread: LoopThreadLike, max_blocking: float,
          on_stall: Callable[[Stall], None]) -> LoopMonitor:
    """:func:`attach_monitor` once per loop thread (any thread may call it, as often as it
    likes: every async task of a pool does); the monitor already watching it otherwise,
    its reports now going to ``on_stall`` (a worker process has one pool; a test may
    make several)."""
    with _monitors_guard:
        known = _monitors.get(id(loop_thread))
        if known is not None and known[0] is loop_thread and not known[1].stopped:
            known[1].on_stall = on_stall
            return known[1]
        for key, (_, monitor) in list(_monitors.items()):
            if monitor.stopped:  # its loop was closed (a loop thread started afresh)
                del _monitors[key]
        monitor = attach_monitor(loop_thread, max_blocking, on_stall)
        _monitors[id(loop_thread)] = (loop_thread, monitor)
        return monitor
