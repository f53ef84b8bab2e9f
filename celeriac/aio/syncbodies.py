"""Synchronous task bodies of the ``-P asyncio`` pool: on a bounded pool of OS threads.

A sync task routed to an asyncio worker must run neither on the event loop
(it would stop every coroutine) nor on the jobs thread (it would stop every
other job). It runs on a thread of :class:`SyncBodies`, and its job greenlet
parks until it is done.

The job is where time limits and ``revoke(terminate=True)`` arrive (the
scheduler throws them into its greenlet): the waiting job *forwards what it is
hit with* to the body's thread with ``PyThreadState_SetAsyncExc``
(:mod:`celeriac.pools.interrupts`). ``SoftTimeLimitExceeded`` is an
``Exception`` the body may catch to clean up and still return a value, so the
job keeps waiting for it. ``HardTimeLimit`` and ``Terminated`` end the job: it
gives the body :data:`UNWIND_GRACE` seconds to stop, then ends anyway (the task
is recorded as failed or revoked). A body stuck in one long C call keeps its
thread until that call returns, and the exception is raised then.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from celeriac.pools.base import EventLike, JobInfo
from celeriac.pools.interrupts import cancel_raise_in_thread, raise_in_thread

log = logging.getLogger("celeriac.worker")

#: Seconds an ending job (hard limit, termination) gives its body's thread to stop;
#: below the supervisor's grace after a hard limit (1 s), so the job ends first.
UNWIND_GRACE = 0.5


class _Call:
    """One body on its way through a thread: the outcome, and who may still be interrupted."""

    def __init__(self, body: Callable[[], Any], done: EventLike) -> None:
        self.body = body
        self.context = contextvars.copy_context()  # the job's request, current task...
        self.done = done
        self.lock = threading.Lock()
        self.ident: int | None = None
        #: What was forwarded before a thread took the body (it then never starts).
        self.early: type[BaseException] | None = None
        self.finished = False
        self.value: Any = None
        self.error: BaseException | None = None
        #: Given up on by its job while still running: its thread leaves the pool after it.
        self.abandoned = False

    def run(self) -> None:
        """On a pool thread: run the body in the job's context, then tell the job.

        A forward lands at any bytecode once ``ident`` is set: inside the body it is the
        body's outcome (a limit hitting its last line is still a limit); after the body
        has ended it comes too late and is dropped.
        """
        try:
            try:
                with self.lock:
                    self.ident = threading.get_ident()
                    early = self.early
                if early is not None:  # limit or termination while it waited for a thread
                    raise early()
                self.value = self.context.run(self.body)
            except BaseException as exc:
                self.error = exc
            self._close()
        except BaseException:  # forwarded as the body ended: too late, dropped
            self._close()
        self.done.set()

    def _close(self) -> None:
        """No forward from now on; drop one asked for but not raised yet."""
        while True:
            try:
                with self.lock:
                    self.finished = True
                    if self.ident is not None:
                        cancel_raise_in_thread(self.ident)
                return
            except BaseException:  # one more forward that came in between
                continue

    def forward(self, exc: BaseException) -> None:
        """Raise ``exc``'s type in the body's thread, if the body still runs."""
        with self.lock:
            if self.ident is None:
                self.early = self.early or type(exc)
            elif not self.finished:
                raise_in_thread(self.ident, type(exc))

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class SyncBodies:
    """A bounded pool of OS threads for sync task bodies; callers wait on an event.

    Daemon threads, started as needed up to ``size``: a body that a hard limit or a
    termination gave up on while it is stuck in a C call must not hold the process's
    exit (``concurrent.futures`` joins its threads at exit: a warm shutdown would wait
    for a ``time.sleep(3600)`` the task no longer owns).

    Such an *abandoned* body's thread stops counting against ``size`` (a new thread
    takes its place, so stuck calls cannot starve the pool) and ends when the call
    returns; a warning names the task. At most ``size`` threads are abandoned at once:
    past that they count again, so stuck calls cannot grow the process without bound.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        #: Threads waiting for a body and not yet promised one.
        self._idle = 0
        #: Threads running an abandoned body (not counted in ``_threads``).
        self.abandoned = 0
        self._names = itertools.count()

    def call(self, body: Callable[[], Any], done: EventLike, job: JobInfo | None = None) -> Any:
        """Run ``body`` on a pool thread and wait for it on ``done`` (a job's event that
        parks it): its value, or its exception raised here."""
        call = _Call(body, done)
        self._submit(call)
        while not done.is_set():
            try:
                done.wait()
            except Exception as exc:
                call.forward(exc)  # a soft limit: the body may catch it and still return
            except BaseException as exc:
                call.forward(exc)
                _wait_quietly(done, UNWIND_GRACE)
                if not done.is_set():
                    self._abandon(call, exc, job)
                raise
        return call.outcome()

    def _abandon(self, call: _Call, exc: BaseException, job: JobInfo | None) -> None:
        with self._lock:
            if call.ident is None or call.finished or self.abandoned >= self.size:
                return  # never started (it will not), just ended, or too many abandoned
            call.abandoned = True
            self.abandoned += 1
            self._threads -= 1
            count = self.abandoned
        what = f"task {job.task}[{job.task_id}]" if job is not None else "a task"
        log.warning("%s ended (%s) but its thread is stuck in a call that cannot be "
                    "interrupted; the thread leaves the pool until the call returns "
                    "(%d abandoned of %d)", what, type(exc).__name__, count, self.size)

    def _submit(self, work: _Call | None) -> None:
        with self._lock:
            self._queue.put(work)
            if self._idle:
                self._idle -= 1
                return
            if work is None or self._threads >= self.size:
                return  # a busy thread takes it when it is done
            self._threads += 1
        threading.Thread(target=self._serve, name=f"celeriac-sync-{next(self._names)}",
                         daemon=True).start()

    def _serve(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                with self._lock:
                    self._threads -= 1
                return
            work.run()
            with self._lock:
                if work.abandoned:  # replaced already: this thread is not counted any more
                    self.abandoned -= 1
                    return
                if self._threads > self.size:  # shrunk meanwhile: one thread fewer
                    self._threads -= 1
                    return
                self._idle += 1

    def resize(self, size: int) -> None:
        """Run up to ``size`` bodies at once from now on: threads beyond it end as they
        finish their bodies; running bodies are never stopped."""
        with self._lock:
            self.size = size

    def stop(self) -> None:
        """Let idle threads end (the others are daemons: they do not hold the exit)."""
        with self._lock:
            idle = self._idle
        for _ in range(idle):
            self._submit(None)


def _wait_quietly(done: EventLike, timeout: float) -> None:
    """Wait up to ``timeout`` for the body to stop; a second throw meanwhile ends the wait."""
    with suppress(BaseException):  # the job ends with the first exception anyway
        done.wait(timeout)
