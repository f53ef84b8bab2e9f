"""The asyncio pool: ``-P asyncio -c N``, up to N tasks at once in one process around an event loop.

Three kinds of threads, so that the event loop only ever runs coroutines:

* the **main thread** runs the consumer (fetch, leases, settling), as in the
  threads pool;
* the **jobs thread** runs the jobs -- the executor for one message each:
  pipeline hooks, status and result writes -- as greenlets under a small
  scheduler (:mod:`celeriac.aio.greenjobs`), up to N at once; a job waiting for
  its task parks and lets the others run;
* a **sync task**'s body runs on a bounded pool of OS threads
  (:mod:`celeriac.aio.syncbodies`) of ``min(SYNC_THREADS, N)`` threads: N is
  sized for coroutines (``-c 1000`` is normal), a thread per sync task would
  be a thousand threads; sync tasks on an asyncio worker are expected to be the
  exception, and beyond 32 threads a pure-Python workload only contends for the
  GIL (32 is also ``concurrent.futures``' own cap for its default size). More
  sync tasks than threads wait for a free one, their time limits counting;
* an **async task**'s coroutine runs on the process's event loop thread
  (:mod:`celeriac.aio.loop`), and its job parks until it is done
  (:meth:`Pool.run_body` with ``is_async``).

Time limits and ``revoke(terminate=True)`` are enforced on the job, as the
gevent pool does: the scheduler throws ``SoftTimeLimitExceeded`` /
``HardTimeLimit`` / ``Terminated`` into the job's greenlet where it waits, and
the job forwards it to its body (the body's thread; the coroutine). So the hard
limit ends the task here (``enforces_hard_limit``); the supervisor replaces the
process only when the jobs thread itself stays blocked past it.

Needs the ``greenlet`` package: ``pip install 'celeriac[asyncio]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from celeriac.aio.greenjobs import JobEvent, JobScheduler
from celeriac.aio.loop import shared_loop
from celeriac.aio.syncbodies import SyncBodies
from celeriac.pools.base import EventLike, Job, JobInfo, Pool

_NO_LIMITS = nullcontext()

#: Most OS threads for sync task bodies in one process (fewer when ``-c`` is smaller).
SYNC_THREADS = 32


def sync_threads(concurrency: int) -> int:
    """Threads for sync bodies at ``-c concurrency``: never more than can run at once."""
    return max(1, min(SYNC_THREADS, concurrency))


class AsyncioPool(Pool):
    """Runs up to ``concurrency`` jobs at once as greenlets of one jobs thread."""

    name = "asyncio"
    enforces_hard_limit = True
    can_interrupt = True
    resizable = True

    def __init__(self, concurrency: int, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(concurrency, conf)
        self._jobs = JobScheduler()
        self._sync: SyncBodies | None = None

    def start(self) -> None:
        """The event loop is this pool's: started now, and watched for blocking
        coroutines from the start (``Pool.watch_loop``)."""
        self._sync = SyncBodies(sync_threads(self.concurrency))
        self._jobs.on_free = self._freed
        self._jobs.max_spares = self.concurrency
        self._jobs.start()
        self.watch_loop(shared_loop())

    def _freed(self) -> None:
        """On the jobs thread, once per turn in which jobs ended: ``on_free``."""
        if self.on_free is not None:
            self.on_free()

    def run(self, main: Callable[[], None]) -> None:
        main()

    def submit(self, job: Job) -> None:
        self._jobs.submit(job)

    def free_slots(self) -> int:
        return max(0, self.concurrency - self._jobs.running())

    def running(self) -> int:
        return self._jobs.running()

    def resize(self, concurrency: int) -> None:
        """A number for the jobs; the sync threads follow ``min(SYNC_THREADS, concurrency)``."""
        self.concurrency = concurrency
        self._jobs.max_spares = concurrency
        if self._sync is not None:
            self._sync.resize(sync_threads(concurrency))

    def event(self) -> EventLike:
        return threading.Event()  # the consumer waits on the main thread

    def threadsafe_event(self) -> EventLike:
        return JobEvent(self._jobs)

    def join(self, timeout: float | None = None) -> bool:
        return self._jobs.join(timeout)

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        if not soft and not hard:
            return _NO_LIMITS  # most tasks: no generator to run around each one
        return self._jobs.limits(soft, hard)

    def run_body(self, body: Callable[[], Any], *, is_async: bool = False, soft: float | None,
                 hard: float | None, job: JobInfo | None = None) -> Any:
        """A coroutine goes to the event loop (the base class: this job parks on a
        :meth:`threadsafe_event` meanwhile); a sync body to a thread of the sync pool."""
        if is_async or not self._jobs.in_job():  # not in a job: nothing to park, run here
            return super().run_body(body, is_async=is_async, soft=soft, hard=hard, job=job)
        assert self._sync is not None, "start() the pool first"
        with self.limits(soft, hard, job):
            return self._sync.call(body, self.threadsafe_event(), job)

    def current_job(self) -> Any:
        return self._jobs.current()

    def interrupt(self, handle: Any, exc: type[BaseException]) -> None:
        """Thrown into the job where it waits, which forwards it to its body."""
        self._jobs.throw(handle, exc())

    def stop(self) -> None:
        self._jobs.stop()
        if self._sync is not None:
            self._sync.stop()
