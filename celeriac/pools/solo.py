"""The solo pool: one task at a time, on the process's main thread.

Tasks run on the main thread so that the soft time limit can use ``SIGALRM``
(Python delivers signals to the main thread only); the consumer's loop runs on
a helper thread and hands jobs over through a queue.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import Any

from celeriac.exceptions import SoftTimeLimitExceeded
from celeriac.pools.base import EventLike, Job, JobInfo, Pool

#: Longest soft limit armed (seconds, about 30 years): longer ones never fire anyway.
MAX_ITIMER = 1e9


class SoloPool(Pool):
    """Runs one job at a time on the main thread."""

    name = "solo"

    def __init__(self, concurrency: int = 1, conf: Mapping[str, Any] | None = None) -> None:
        super().__init__(1, conf)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._limit_armed = False

    @classmethod
    def layout(cls, concurrency: int, processes: int | None) -> tuple[int, int]:
        return (processes or 1, 1)

    def run(self, main: Callable[[], None]) -> None:
        failure: list[BaseException] = []

        def consumer() -> None:
            try:
                main()
            except BaseException as exc:  # handed to the main thread, re-raised there
                failure.append(exc)
            finally:
                self._jobs.put(None)

        thread = threading.Thread(target=consumer, name="celeriac-consumer", daemon=True)
        thread.start()
        while True:
            try:
                job = self._jobs.get(timeout=0.5)  # a timeout keeps signal handlers responsive
            except queue.Empty:
                continue
            if job is None:
                break
            try:
                job()
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
        thread.join()
        if failure:
            raise failure[0]

    def submit(self, job: Job) -> None:
        with self._idle:
            self._pending += 1
        self._jobs.put(job)

    def free_slots(self) -> int:
        return 0 if self._pending else 1

    def running(self) -> int:
        return self._pending

    def event(self) -> EventLike:
        return threading.Event()

    def join(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def limits(self, soft: float | None, hard: float | None,
               job: JobInfo | None = None) -> AbstractContextManager[None]:
        return self._alarm(soft)

    @contextmanager
    def _alarm(self, soft: float | None) -> Iterator[None]:
        """Raise SoftTimeLimitExceeded in the task after ``soft`` seconds, via SIGALRM."""
        if not soft or threading.current_thread() is not threading.main_thread():
            yield
            return

        def fire(signum: int, frame: FrameType | None) -> None:
            if self._limit_armed:
                self._limit_armed = False
                raise SoftTimeLimitExceeded(f"soft time limit ({soft}s) exceeded")

        previous = signal.signal(signal.SIGALRM, fire)
        self._limit_armed = True
        try:
            # A limit of centuries is no limit, and setitimer overflows on such values.
            signal.setitimer(signal.ITIMER_REAL, min(soft, MAX_ITIMER))
            yield
        finally:
            self._limit_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
