"""The gevent pool: ``-c N`` greenlets in one process (``--processes M`` for more cores).

Monkey patching is process-wide and must come first, so it happens in
:meth:`GeventPool.prepare_process`, which the worker process calls before it
imports anything else -- the user's app included. ``GEVENT_PATCHTHREAD=N`` in
the environment patches everything but threads (for apps such as the Django ORM
that bring their own greenlet-safe thread pool); celeriac's internals only use
this pool's primitives and the hub's thread pool, so they stay correct in that
mode.

Blocking calls never run on the hub: :func:`celeriac.blocking.offload` is
pointed at the hub's thread pool, so SQLite runs on real threads.

Time limits are gevent timeouts raised in the task's greenlet at its next
cooperative switch: ``SoftTimeLimitExceeded`` at the soft limit, and
:class:`~celeriac.errors.HardTimeLimit` (a ``BaseException``, so ``except
Exception`` in user code cannot swallow it) at the hard one. A task that never
switches -- a CPU loop, a C call -- blocks the whole hub; then the supervisor
kills and replaces the process shortly after the hard limit.

Blocking detection: gevent's monitor thread (a real OS thread) checks every
``worker_max_blocking_time`` seconds whether the hub has switched; when it has
not, this pool learns which greenlet held it and its stack, and reports one
:class:`~celeriac.pools.base.Stall` when the stall starts and one when it ends,
naming the task that caused it. Reports go to ``on_stall``, which must not
take locks (it runs on the monitor thread, where gevent's patched locks do not
belong): the worker process writes them to the supervisor's status pipe, and the
supervisor logs them -- even when the hub stays blocked for good.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import gevent

from celeriac.errors import HardTimeLimit, SoftTimeLimitExceeded
from celeriac.pools.base import EventLike, Job, JobInfo, Pool, Stall

#: Modules whose import before patching means some code holds unpatched objects.
PATCH_SENSITIVE = ("ssl", "socket", "threading", "select", "subprocess", "queue")

#: Threads in the hub's pool that run blocking calls (SQLite) off the event loop.
OFFLOAD_THREADS = 8


def patch_threads_wanted() -> bool:
    """False when ``GEVENT_PATCHTHREAD`` says no (N, 0, no, false, off)."""
    value = os.environ.get("GEVENT_PATCHTHREAD", "").strip().lower()
    return value not in {"n", "0", "no", "false", "off"}


class GeventPool(Pool):
    """Runs up to ``concurrency`` jobs at once as greenlets."""

    name = "gevent"
    green = True
    enforces_hard_limit = True
    imported_too_early: ClassVar[list[str]] = []

    def __init__(self, concurrency: int, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(concurrency, conf)
        #: Greenlet -> (the job it runs, when it started); read by the monitor thread.
        self._jobs: dict[Any, tuple[JobInfo, float]] = {}
        self._stall: Stall | None = None
        self._stall_greenlet: Any = None
        self._stall_started = 0.0
        self._max_blocking = float(self.conf.get("worker_max_blocking_time") or 0.1)

    @classmethod
    def prepare_process(cls) -> None:
        # Look before importing gevent.monkey: it imports logging, hence threading, itself.
        cls.imported_too_early = [name for name in PATCH_SENSITIVE if name in sys.modules]
        from gevent import monkey

        monkey.patch_all(thread=patch_threads_wanted())

    def start(self) -> None:
        import gevent.pool

        from celeriac.blocking import set_offloader

        self._group = gevent.pool.Pool(self.concurrency)
        hub = gevent.get_hub()
        hub.threadpool.maxsize = OFFLOAD_THREADS

        def offload(fn: Callable[..., Any], *args: Any) -> Any:
            return hub.threadpool.apply(fn, args)

        set_offloader(offload)
        self._start_monitor(hub)

    # -- blocking detection ---------------------------------------------------------------
    def _start_monitor(self, hub: Any) -> None:
        import gevent.events

        config = gevent.config
        config.monitor_thread = True
        config.max_blocking_time = self._max_blocking
        config.print_blocking_reports = False
        gevent.events.subscribers.append(self._on_event)
        hub.start_periodic_monitoring_thread()
        gevent.spawn(self._watch_stalls)

    def _on_event(self, event: Any) -> None:
        """Called on gevent's monitor thread, while the hub is blocked."""
        import gevent.events

        if not isinstance(event, gevent.events.EventLoopBlocked):
            return
        now = time.monotonic()
        if self._stall is not None and event.greenlet is self._stall_greenlet:
            self._stall.seconds = now - self._stall_started
            return
        self._finish_stall()
        # The blocking greenlet is running, so its frames are the hub thread's frames.
        hub_thread = getattr(event.hub, "thread_ident", None)
        frame = sys._current_frames().get(hub_thread) if hub_thread is not None else None
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        job, job_started = self._jobs.get(event.greenlet, (None, 0.0))
        # The monitor samples every period, so the loop has been blocked for one to two
        # periods; a job that started within that window blocked from its start.
        self._stall_started = max(job_started, now - 1.5 * self._max_blocking)
        self._stall_greenlet = event.greenlet
        self._stall = Stall(job, now - self._stall_started, stack)
        if self.on_stall:
            self.on_stall(self._stall)

    def _watch_stalls(self) -> None:
        """A greenlet on the hub: whenever it gets to run, nothing is blocking the hub,
        so a stall the monitor recorded is over (and it ended about now)."""
        while True:
            gevent.sleep(self._max_blocking / 2)
            if self._stall is not None:
                self._finish_stall()

    def _finish_stall(self) -> None:
        stall, self._stall = self._stall, None
        self._stall_greenlet = None
        if stall is not None:
            stall.seconds = max(stall.seconds, time.monotonic() - self._stall_started)
            stall.ended = True
            if self.on_stall:
                self.on_stall(stall)

    # -- jobs -----------------------------------------------------------------------------
    def run(self, main: Callable[[], None]) -> None:
        gevent.spawn(main).get()

    def submit(self, job: Job) -> None:
        self._group.spawn(job)

    def free_slots(self) -> int:
        free: int = self._group.free_count()
        return free

    def running(self) -> int:
        return len(self._group)

    def event(self) -> EventLike:
        import gevent.event

        event: EventLike = gevent.event.Event()
        return event

    def join(self, timeout: float | None = None) -> bool:
        return bool(self._group.join(timeout=timeout))

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        return self._timeouts(soft, hard, job)

    @contextmanager
    def _timeouts(self, soft: float | None, hard: float | None,
                  job: JobInfo | None) -> Iterator[None]:
        current = gevent.getcurrent()
        if job is not None:
            self._jobs[current] = (job, time.monotonic())
        timers = []
        if soft:
            timers.append(gevent.Timeout(soft, SoftTimeLimitExceeded(
                f"soft time limit ({soft}s) exceeded")))
        if hard:
            timers.append(gevent.Timeout(hard, HardTimeLimit(f"hard time limit ({hard}s) exceeded")))
        for timer in timers:
            timer.start()
        try:
            yield
        finally:
            for timer in timers:
                timer.close()
            self._jobs.pop(current, None)

    def stop(self) -> None:
        from celeriac.blocking import set_offloader

        set_offloader(None)
