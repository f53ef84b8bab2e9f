"""Job greenlets on one native thread: where the ``-P asyncio`` pool runs its jobs.

A job -- the consumer's synchronous callable that runs the executor for one
message: pipeline hooks, result and status writes, the wait for the task's
body -- is mostly waiting: for a coroutine on the event loop's thread, or for a
synchronous task's body on a thread of the pool. Running each job on its own OS
thread would cost a thread per task at ``-c 1000``; running jobs on the event
loop would put blocking pipeline code (SQLite, a Redis round trip) on the loop.
So jobs run as greenlets on ONE dedicated native thread, the *jobs thread*,
under the small :class:`JobScheduler` here: a job that must wait *parks*
(switches back to the scheduler's greenlet), and a thread-safe wake-up -- a
command in the scheduler's inbox -- resumes it. The scheduler is not gevent:
there is no I/O loop and nothing is monkey-patched; a job that blocks in a
plain call blocks the jobs thread for that call, which pipeline code only does
briefly. A job greenlet is kept for the next job when its own ends (up to the
pool's concurrency of them), as a thread pool keeps its threads.

Time limits and ``revoke(terminate=True)`` are exceptions the scheduler throws
into the job's greenlet where it is parked (:meth:`JobScheduler.limits`,
:meth:`JobScheduler.throw`), as the gevent pool does with gevent timeouts. The
code that waits catches them and forwards them to whatever it waits for (the
body's thread, the coroutine); see :mod:`celeriac.aio.syncbodies`.

Everything that touches a greenlet happens on the jobs thread: other threads
only append commands to the inbox (a deque; a native condition wakes the
scheduler up when it sleeps), so no greenlet is ever switched to from the wrong
thread.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import greenlet

from celeriac.exceptions import HardTimeLimit, SoftTimeLimitExceeded
from celeriac.pools.base import Job

log = logging.getLogger("celeriac.worker")


@dataclass(order=True)
class _Timer:
    """An action the scheduler runs on its own greenlet at ``deadline`` unless cancelled."""

    deadline: float
    seq: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class JobScheduler:
    """Runs jobs as greenlets on one native thread; parks and resumes them.

    ``submit``, ``throw``, ``wake``, ``running`` and ``join`` may be called from any
    thread; ``park``, ``limits``, ``call_later`` only from a job on the jobs thread.
    """

    def __init__(self, name: str = "celeriac-jobs") -> None:
        self._name = name
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        #: Wakes the scheduler when it sleeps (``_sleeping``) and whoever :meth:`join` s.
        self._cond = threading.Condition()
        #: True while the scheduler waits on ``_cond``: only then does a post notify it.
        self._sleeping = False
        #: Threads in :meth:`join` (a job's end notifies ``_cond`` only when there are).
        self._joining = 0
        #: Guards ``_active``, changed from any thread (a plain lock: cheaper than ``_cond``).
        self._counter = threading.Lock()
        self._active = 0
        self._stopping = False
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        #: Parked greenlet -> the token it waits for (a wake with another token is stale).
        self._parked: dict[Any, object] = {}
        self._hub: Any = None
        #: Called on the jobs thread after a turn of the scheduler in which jobs ended,
        #: once for all of them (the pool's ``on_free``: their slots are free).
        self.on_free: Callable[[], None] | None = None
        #: Jobs that ended since the scheduler last called ``on_free``.
        self._ended = 0
        #: Job greenlets without a job, each waiting in :meth:`_slot` for its next one.
        self._spares: list[Any] = []
        #: Most spare greenlets kept (the pool sets it to its concurrency).
        self.max_spares = 64
        #: Job greenlet -> how many jobs it has taken: with the greenlet, a job's handle
        #: (:meth:`current`), so a throw meant for a job that ended misses the next one.
        self._taken: dict[Any, int] = {}
        self._thread: threading.Thread | None = None
        self.ident: int | None = None

    # -- any thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Start ``job`` on a greenlet of the jobs thread (a spare one if there is one)."""
        with self._counter:
            self._active += 1
        self._post(self._start_job, job)

    def running(self) -> int:
        return self._active

    def wake(self, glet: Any, token: object) -> None:
        """Resume ``glet`` if it is still parked waiting for ``token``."""
        self._post(self._wake, glet, token)

    def throw(self, handle: tuple[Any, int], exc: BaseException) -> None:
        """Raise ``exc`` in the job ``handle`` names (:meth:`current`) where it is parked;
        dropped if that job has ended, even if its greenlet runs another one by then."""
        self._post(self._throw_job, handle, exc)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no job runs; True when none is left."""
        with self._cond:
            self._joining += 1
            try:
                return self._cond.wait_for(lambda: self._active == 0, timeout)
            finally:
                self._joining -= 1

    def stop(self, timeout: float = 1.0) -> None:
        """End the jobs thread once its jobs have ended (at most ``timeout`` to wait here)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def in_job(self) -> bool:
        """True when called from a job greenlet (where :meth:`park` may be called)."""
        return (threading.get_ident() == self.ident
                and greenlet.getcurrent() is not self._hub)

    def current(self) -> tuple[Any, int] | None:
        """A handle on the job calling, for :meth:`throw`; None outside a job."""
        if not self.in_job():
            return None
        current = greenlet.getcurrent()
        return current, self._taken.get(current, 0)

    def _post(self, command: Callable[..., None], *args: Any) -> None:
        """Append a command to the inbox (a deque: atomic); notify the scheduler only if it
        sleeps. Two posts per task (its start, its wake-up), each taking the condition and
        notifying it, cost a few microseconds of the GIL per task. No wake-up is lost: the
        scheduler sets ``_sleeping`` and looks at the inbox again under the condition
        before it waits, and a post notifies under the condition, which it can only take
        once the scheduler waits."""
        self._inbox.append((command, args))
        if self._sleeping:
            with self._cond:
                self._cond.notify_all()  # not notify(): a joiner may wait on it too

    # -- jobs thread: called from a job -------------------------------------------------
    def park(self, token: object) -> None:
        """Give the jobs thread to other jobs until :meth:`wake` with ``token`` (or a throw).

        Called by a job that has registered ``token`` where something will wake it.
        Raises whatever :meth:`throw` (a time limit, a termination) sends meanwhile.
        """
        current = greenlet.getcurrent()
        self._parked[current] = token
        try:
            self._hub.switch()
        finally:
            self._parked.pop(current, None)

    def call_later(self, delay: float, action: Callable[[], None]) -> _Timer:
        """Run ``action`` on the scheduler after ``delay`` seconds (cancel: ``timer.cancelled``)."""
        timer = _Timer(time.monotonic() + delay, next(self._seq), action)
        heapq.heappush(self._timers, timer)
        return timer

    @contextmanager
    def limits(self, soft: float | None, hard: float | None) -> Iterator[None]:
        """Throw ``SoftTimeLimitExceeded`` / :class:`HardTimeLimit` into this job at its
        deadlines, where it is parked (``HardTimeLimit`` is a ``BaseException``: ``except
        Exception`` in the task cannot swallow it). Off the jobs thread there is no job to
        throw into: nothing is enforced there."""
        if not self.in_job():
            yield
            return
        current = greenlet.getcurrent()
        timers = []
        if soft:
            timers.append(self.call_later(soft, lambda: self._throw(
                current, SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded"))))
        if hard:
            timers.append(self.call_later(hard, lambda: self._throw(
                current, HardTimeLimit(f"hard time limit ({hard}s) exceeded"))))
        try:
            yield
        finally:
            for timer in timers:
                timer.cancelled = True

    # -- jobs thread: the scheduler's own greenlet ---------------------------------------
    def _main(self) -> None:
        self._hub = greenlet.getcurrent()
        self.ident = threading.get_ident()
        while self._turn():
            pass
        spares, self._spares = self._spares, []
        for spare in spares:  # waiting in _slot for a job: GreenletExit ends it there
            spare.throw()

    def _turn(self) -> bool:
        """One turn: wait for commands or a due timer, run them; False once stopped."""
        inbox = self._inbox
        if not inbox and not self._due():
            with self._cond:
                while not inbox and not self._due():
                    if self._stopping and self._active == 0:
                        return False
                    self._sleeping = True
                    if not inbox:  # a post after the look above saw _sleeping False
                        self._cond.wait(self._until_next_timer())
                    self._sleeping = False
        # Taken one by one: other threads append meanwhile, without a lock.
        for _ in range(len(inbox)):
            command, args = inbox.popleft()
            command(*args)
        while self._due():
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.action()
        if self._ended:
            self._freed()
        return True

    def _freed(self) -> None:
        """Jobs ended this turn: ``on_free``, once. Nothing it raises may end the jobs
        thread: it is logged, and the consumer's own loop hands the slots over instead."""
        self._ended = 0
        if self.on_free is not None:
            try:
                self.on_free()
            except Exception:
                log.exception("handing freed slots their next messages failed")

    def _due(self) -> bool:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return bool(self._timers) and self._timers[0].deadline <= time.monotonic()

    def _until_next_timer(self) -> float | None:
        if not self._timers:
            return None
        return max(0.0, self._timers[0].deadline - time.monotonic())

    def _start_job(self, job: Job) -> None:
        spares = self._spares
        if spares:
            slot = spares.pop()
        else:
            slot = greenlet.greenlet(self._slot, parent=self._hub)
            slot.switch()  # up to where it waits for a job, as a spare does
        slot.switch(job)

    def _slot(self) -> None:
        """A job greenlet: runs jobs one after another, as a thread of a thread pool does,
        waiting among the spares between two. A greenlet per job cost its creation and
        the frame stack CPython gives each new one, a 16 KB ``mmap`` and ``munmap``: two
        system calls and fresh pages per task (``strace -c`` of a ``-P asyncio`` worker).
        Each job runs in a fresh ``contextvars`` context, as in a new greenlet."""
        current = greenlet.getcurrent()
        taken = self._taken
        taken[current] = 0
        try:
            # Every job, the first too, comes by a switch: the arguments of a greenlet's
            # run() stay alive as long as it runs, and would keep the first job alive.
            job = self._hub.switch()
            while True:
                taken[current] += 1
                self._run_job(job)
                del job  # a spare does not keep its last job (its message, its run) alive
                if len(self._spares) >= self.max_spares or self._stopping:
                    return
                self._spares.append(current)
                job = self._hub.switch()
        finally:
            del taken[current]

    def _run_job(self, job: Job) -> None:
        try:
            contextvars.Context().run(job)
        except BaseException as exc:
            # Nothing may reach the scheduler's greenlet. The consumer's job catches every
            # Exception; what gets here is a termination or time limit thrown into the job
            # after its task had ended (it was parked in a hook), which has nothing to stop.
            log.warning("job ended by %r, thrown in after its task had ended", exc)
        finally:
            self._ended += 1
            with self._counter:
                self._active -= 1
                none_left = not self._active
            if none_left and self._joining:
                with self._cond:
                    self._cond.notify_all()

    def _wake(self, glet: Any, token: object) -> None:
        if self._parked.get(glet) is token:
            glet.switch()

    def _throw(self, glet: Any, exc: BaseException) -> None:
        if glet in self._parked:
            glet.throw(exc)

    def _throw_job(self, handle: tuple[Any, int], exc: BaseException) -> None:
        glet, job = handle
        if self._taken.get(glet) == job:
            self._throw(glet, exc)


class JobEvent:
    """An event whose ``wait()`` parks the job greenlet calling it (or blocks a plain
    thread, when called off the jobs thread) and whose ``set()`` any thread may call:
    the ``-P asyncio`` pool's ``threadsafe_event()``."""

    #: ``run_coroutine`` waits on it in one go, not in 50 ms slices: the scheduler throws
    #: time limits and terminations into the parked job at once, and a thousand jobs
    #: woken 20 times a second kept the jobs thread busy (bench/asyncio_compare.py).
    cooperative = True

    def __init__(self, scheduler: JobScheduler) -> None:
        self._scheduler = scheduler
        # One per task on -P asyncio: a plain lock, and a condition (on the same lock)
        # only once a thread outside the jobs waits -- a Condition per event cost ~4%
        # of the worker's CPU per task.
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        self._flag = False
        self._waiters: list[tuple[Any, object]] = []

    def set(self) -> None:
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
            if self._cond is not None:
                self._cond.notify_all()
        for glet, token in waiters:
            self._scheduler.wake(glet, token)

    def clear(self) -> None:
        with self._lock:
            self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        scheduler = self._scheduler
        if not scheduler.in_job():
            with self._lock:
                if self._cond is None:
                    self._cond = threading.Condition(self._lock)
                return self._cond.wait_for(lambda: self._flag, timeout)
        token = object()
        entry = (greenlet.getcurrent(), token)
        with self._lock:
            if self._flag:
                return True
            self._waiters.append(entry)
        timer = None
        if timeout is not None:
            timer = scheduler.call_later(timeout, lambda: scheduler.wake(*entry))
        try:
            scheduler.park(token)
        finally:
            if timer is not None:
                timer.cancelled = True
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self._flag
