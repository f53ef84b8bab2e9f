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
:class:`~celeriac.exceptions.HardTimeLimit` (a ``BaseException``, so ``except
Exception`` in user code cannot swallow it) at the hard one. A task that never
switches -- a CPU loop, a C call -- blocks the whole hub; then the supervisor
kills and replaces the process shortly after the hard limit.

Blocking detection: a greenlet trace function notes the time of every switch
and the greenlet switched to; a monitor thread (a real OS thread, so it runs
while the hub is blocked) looks a few times per ``worker_max_blocking_time``.
When a greenlet other than the hub has run that long without switching, the
pool takes the hub thread's stack and reports one
:class:`~celeriac.pools.base.Stall` when the stall starts and one when it ends,
naming the task that caused it and timed from the switch before it to the switch
after it. (gevent's own monitor builds a report of every greenlet before it tells
anyone, which comes late enough to time stalls wrongly and to blame a greenlet
that has moved on.) Reports go to ``on_stall``, which must not take locks (it
runs on the monitor thread, where gevent's patched locks do not belong): the
worker process writes them to the supervisor's status pipe, and the supervisor
logs them -- even when the hub stays blocked for good.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import gevent

from celeriac.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from celeriac.pools.base import EventLike, Job, JobInfo, Pool, Stall

#: Modules whose import before patching means some code holds unpatched objects.
PATCH_SENSITIVE = ("ssl", "socket", "threading", "select", "subprocess", "queue")

#: Threads in the hub's pool that run blocking calls (SQLite) off the event loop.
OFFLOAD_THREADS = 8


def patch_threads_wanted() -> bool:
    """False when ``GEVENT_PATCHTHREAD`` says no (N, 0, no, false, off)."""
    value = os.environ.get("GEVENT_PATCHTHREAD", "").strip().lower()
    return value not in {"n", "0", "no", "false", "off"}


class _Limits:
    """One job's slot: its :class:`JobInfo` noted for the blocking monitor, and its soft
    and hard limits as gevent timeouts. A class rather than a generator context manager,
    which every task entered (bench/redis_compare.py measured no difference)."""

    __slots__ = ("current", "hard", "job", "jobs", "soft", "timers")

    def __init__(self, jobs: dict[Any, tuple[JobInfo, float]], soft: float | None,
                 hard: float | None, job: JobInfo | None) -> None:
        self.jobs, self.soft, self.hard, self.job = jobs, soft, hard, job
        self.timers: list[gevent.Timeout] = []

    def __enter__(self) -> None:
        self.current = gevent.getcurrent()
        if self.job is not None:
            self.jobs[self.current] = (self.job, time.monotonic())
        if self.soft:
            self.timers.append(gevent.Timeout(self.soft, SoftTimeLimitExceeded(
                f"soft time limit ({self.soft}s) exceeded")))
        if self.hard:
            self.timers.append(gevent.Timeout(self.hard, HardTimeLimit(
                f"hard time limit ({self.hard}s) exceeded")))
        for timer in self.timers:
            timer.start()

    def __exit__(self, *exc_info: object) -> None:
        for timer in self.timers:
            timer.close()
        self.jobs.pop(self.current, None)


class GeventPool(Pool):
    """Runs up to ``concurrency`` jobs at once as greenlets."""

    name = "gevent"
    green = True
    enforces_hard_limit = True
    can_interrupt = True
    resizable = True
    imported_too_early: ClassVar[list[str]] = []

    def __init__(self, concurrency: int, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(concurrency, conf)
        #: Greenlet -> (the job it runs, when it started); read by the monitor thread.
        self._jobs: dict[Any, tuple[JobInfo, float]] = {}
        self._stall: Stall | None = None
        self._stall_started = 0.0
        #: Set by the trace function on every switch: when, and to which greenlet.
        self._switched_at = time.monotonic()
        self._active: Any = None
        #: The last (start, end) without a switch longer than worker_max_blocking_time.
        self._gap = (0.0, 0.0)
        self._stopped = False
        self._max_blocking = float(self.conf.get("worker_max_blocking_time") or 0.1)

    @classmethod
    def prepare_process(cls) -> None:
        # Look before importing gevent.monkey: it imports logging, hence threading, itself.
        cls.imported_too_early = [name for name in PATCH_SENSITIVE if name in sys.modules]
        from gevent import monkey

        monkey.patch_all(thread=patch_threads_wanted())

    def start(self) -> None:
        import gevent.event
        import gevent.queue
        import greenlet

        from celeriac.blocking import set_offloader

        #: Jobs submitted and not yet taken by a slot.
        self._pending: gevent.queue.SimpleQueue[Job] = gevent.queue.SimpleQueue()
        #: Jobs submitted and not ended; slot greenlets alive (free_slots() bounds the
        #: first by concurrency, so resize() is just a number).
        self._running = 0
        self._slots = 0
        #: Slot greenlet -> how many jobs it took: a handle names one job, not its slot.
        self._taken: dict[Any, int] = {}
        self._idle = gevent.event.Event()
        self._idle.set()
        hub = gevent.get_hub()
        hub.threadpool.maxsize = OFFLOAD_THREADS

        def offload(fn: Callable[..., Any], *args: Any) -> Any:
            return hub.threadpool.apply(fn, args)

        set_offloader(offload)
        self._start_monitor(hub)
        #: Calls on_free at the hub's next turn after jobs ended, once for all of them.
        self._refiller = greenlet.greenlet(self._refill, parent=hub)
        self._refill_due = False

    def _refill(self) -> None:
        """The refiller's greenlet: a job's end schedules a switch to it at the hub's
        next turn (one at a time: :attr:`_refill_due` stays set while it runs, so a
        switch never lands on it while it waits inside ``on_free``); it calls
        ``on_free`` once for every job that ended meanwhile and goes back to the hub.
        A raw greenlet switched to by a hub callback: two switches a turn, no event."""
        hub = gevent.get_hub()
        while True:
            try:
                if self.on_free is not None:
                    self.on_free()
            except Exception:
                hub.handle_error(gevent.getcurrent(), *sys.exc_info())
            self._refill_due = False
            hub.switch()

    # -- blocking detection ---------------------------------------------------------------
    def _start_monitor(self, hub: Any) -> None:
        from gevent import monkey

        self._trace_switches()
        start_thread = monkey.get_original("_thread", "start_new_thread")
        start_thread(self._monitor, (hub, monkey.get_original("time", "sleep")))
        gevent.spawn(self._watch_stalls)

    def _trace_switches(self) -> None:
        """Note every greenlet switch in this (the hub's) thread: when, and to which greenlet.

        The time between two switches that passes ``worker_max_blocking_time`` is
        remembered as a gap: if it was a stall, it started and ended exactly there.
        Runs on every switch, so it does as little as it can.
        """
        import greenlet

        monotonic = time.monotonic
        longest = self._max_blocking
        previous = greenlet.gettrace()

        def trace(event: str, args: Any) -> None:
            now = monotonic()
            if now - self._switched_at >= longest:
                self._gap = (self._switched_at, now)
            self._switched_at = now
            self._active = args[1] if event in ("switch", "throw") else None
            if previous is not None:
                previous(event, args)

        greenlet.settrace(trace)

    def _monitor(self, hub: Any, sleep: Callable[[float], None]) -> None:
        """The monitor thread: a real OS thread, so it runs while the hub is blocked."""
        period = max(self._max_blocking / 4, 0.005)
        while not self._stopped:
            sleep(period)
            self._check(hub)

    def _check(self, hub: Any) -> None:
        """On the monitor thread: report a greenlet that has held the loop too long."""
        since, greenlet = self._switched_at, self._active
        now = time.monotonic()
        # Waiting in the hub is idle (I/O, timers), not blocked.
        if now - since < self._max_blocking or greenlet is None or greenlet is hub:
            return
        if self._stall is not None and self._stall_started == since:
            self._stall.seconds = now - since
            return
        self._finish_stall()
        # The blocking greenlet is running, so its frames are the hub thread's frames.
        frame = sys._current_frames().get(hub.thread_ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        if self._switched_at != since:
            return  # it switched while we looked: over already, and that stack is not its own
        job, _ = self._jobs.get(greenlet, (None, 0.0))
        self._stall_started = since
        self._stall = Stall(job, now - since, stack)
        if self.on_stall:
            self.on_stall(self._stall)

    def _watch_stalls(self) -> None:
        """A greenlet on the hub: whenever it gets to run, nothing is blocking the hub,
        so a stall the monitor recorded is over."""
        while True:
            gevent.sleep(self._max_blocking / 2)
            if self._stall is not None:
                self._finish_stall()

    def _finish_stall(self) -> None:
        stall, self._stall = self._stall, None
        if stall is not None:
            started, ended = self._gap
            if started == self._stall_started:  # the switch that ended it
                stall.seconds = ended - started
            else:
                stall.seconds = max(stall.seconds, time.monotonic() - self._stall_started)
            stall.ended = True
            if self.on_stall:
                self.on_stall(stall)

    # -- jobs -----------------------------------------------------------------------------
    def run(self, main: Callable[[], None]) -> None:
        gevent.spawn(main).get()

    def submit(self, job: Job) -> None:
        """Hand ``job`` to a slot: a greenlet that runs jobs one after another, as a
        thread of a thread pool does. A greenlet per job would cost its creation and
        the frame stack CPython gives each new one (a 16 KB mmap and munmap per task).
        Each job runs in a fresh ``contextvars`` context, as in a new greenlet; what a
        task keeps in a greenlet-local (``threading.local`` when patched) stays in its
        slot for the next task there, as in a thread pool."""
        self._running += 1
        self._idle.clear()
        self._pending.put(job)
        if self._slots < self._running:  # every slot is busy: one more
            self._slots += 1
            gevent.spawn(self._slot)

    def _slot(self) -> None:
        current = gevent.getcurrent()
        self._taken[current] = 0
        take, hub = self._pending.get, gevent.get_hub()
        try:
            while self._slots <= self.concurrency or self._running >= self._slots:
                job = take()
                self._taken[current] += 1
                try:
                    contextvars.Context().run(job)
                except gevent.GreenletExit:
                    raise
                except BaseException:  # reported as a dying greenlet's would be
                    hub.handle_error(current, *sys.exc_info())
                finally:
                    self._running -= 1
                    if not self._running:
                        self._idle.set()
                    if self.on_free is not None and not self._refill_due:
                        self._refill_due = True
                        hub.loop.run_callback(self._refiller.switch)
                del job  # an idle slot does not keep its last job (its message, its run) alive
        finally:
            self._slots -= 1
            self._taken.pop(current, None)

    def let_jobs_start(self) -> None:
        gevent.sleep(0)

    def free_slots(self) -> int:
        return max(0, self.concurrency - self._running)

    def resize(self, concurrency: int) -> None:
        self.concurrency = concurrency

    def running(self) -> int:
        return self._running

    def event(self) -> EventLike:
        import gevent.event

        event: EventLike = gevent.event.Event()
        return event

    def start_service(self, target: Callable[[], None], name: str) -> Callable[[float | None], bool]:
        """A greenlet (a native thread would not share the hub's sockets), whatever
        ``GEVENT_PATCHTHREAD`` says."""
        glet = gevent.spawn(target)
        glet.name = name

        def join(timeout: float | None) -> bool:
            glet.join(timeout)
            return bool(glet.dead)

        return join

    def threadsafe_event(self) -> EventLike:
        from celeriac.aio.events import gevent_event

        return gevent_event()

    def join(self, timeout: float | None = None) -> bool:
        return bool(self._idle.wait(timeout))

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        return _Limits(self._jobs, soft, hard, job)

    def current_job(self) -> Any:
        current = gevent.getcurrent()
        return current, self._taken.get(current)

    def interrupt(self, handle: Any, exc: type[BaseException]) -> None:
        """Raise ``exc`` in the job of ``handle`` from the hub's next turn, if its slot
        still runs that job then (not the next one it took meanwhile)."""
        slot, taken = handle

        def throw() -> None:
            if not slot.dead and self._taken.get(slot) == taken and taken is not None:
                slot.throw(exc)

        gevent.get_hub().loop.run_callback(throw)

    def stop(self) -> None:
        from celeriac.blocking import set_offloader

        self._stopped = True
        set_offloader(None)
