"""The threads pool: ``-c N`` OS threads in one process.

Good for I/O-bound tasks that use blocking libraries. The soft time limit is
delivered with ``PyThreadState_SetAsyncExc``: CPython raises
``SoftTimeLimitExceeded`` in the task's thread at its next bytecode boundary.
A thread blocked inside one long C call (``time.sleep(60)``, a socket read
without a timeout) only sees it when that call returns; the hard limit, which
the supervisor enforces by replacing the whole process, covers that case (the
other tasks of the process are then delivered again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.pools.base import EventLike, Job, JobInfo, Pool
from celeriac.pools.interrupts import raise_in_thread

#: How often the soft-limit watchdog looks at deadlines (seconds).
WATCH_INTERVAL = 0.05


class _SoftLimitWatchdog:
    """One thread that raises SoftTimeLimitExceeded in threads past their deadline."""

    def __init__(self) -> None:
        self._deadlines: dict[int, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def arm(self, ident: int, deadline: float) -> None:
        with self._lock:
            self._deadlines[ident] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="celeriac-soft-limits",
                                                daemon=True)
                self._thread.start()

    def disarm(self, ident: int) -> None:
        with self._lock:
            self._deadlines.pop(ident, None)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            with self._lock:
                late = [ident for ident, deadline in self._deadlines.items() if deadline <= now]
                for ident in late:
                    del self._deadlines[ident]
                    raise_in_thread(ident, SoftTimeLimitExceeded)


class ThreadPool(Pool):
    """Runs up to ``concurrency`` jobs at once on OS threads."""

    name = "threads"
    can_interrupt = True
    resizable = True

    def __init__(self, concurrency: int, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(concurrency, conf)
        self._executor: ThreadPoolExecutor | None = None
        self._active = 0
        self._idle = threading.Condition()
        self._watchdog = _SoftLimitWatchdog()

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="celeriac-task")

    def run(self, main: Callable[[], None]) -> None:
        main()

    def submit(self, job: Job) -> None:
        assert self._executor is not None, "start() the pool first"
        with self._idle:
            self._active += 1
        self._executor.submit(self._run, job)

    def _run(self, job: Job) -> None:
        try:
            job()
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def free_slots(self) -> int:
        return max(0, self.concurrency - self._active)

    def resize(self, concurrency: int) -> None:
        """A new executor of ``concurrency`` threads takes the jobs from now on; the old
        one is shut down without waiting, so its running jobs finish on their threads,
        which then exit (``free_slots`` counts them until they do)."""
        old, self._executor = self._executor, ThreadPoolExecutor(
            concurrency, thread_name_prefix="celeriac-task")
        self.concurrency = concurrency
        if old is not None:
            old.shutdown(wait=False)

    def running(self) -> int:
        return self._active

    def event(self) -> EventLike:
        return threading.Event()

    def join(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        return self._soft_limit(soft)

    @contextmanager
    def _soft_limit(self, soft: float | None) -> Iterator[None]:
        if not soft:
            yield
            return
        ident = threading.get_ident()
        self._watchdog.arm(ident, time.monotonic() + soft)
        try:
            yield
        finally:
            self._watchdog.disarm(ident)

    def current_job(self) -> Any:
        return threading.get_ident()

    def interrupt(self, handle: Any, exc: type[BaseException]) -> None:
        """Raised at the thread's next bytecode boundary: a thread inside one long C call
        (a ``time.sleep``, a read without timeout) sees it only when the call returns,
        so the revoke middleware escalates to replacing the process after a grace period."""
        raise_in_thread(handle, exc)

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
