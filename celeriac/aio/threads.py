"""The loop's default executor: native OS threads, even in a monkey-patched process.

``asyncio.to_thread``, ``loop.run_in_executor(None, ...)`` and ``getaddrinfo`` run
on the loop's default executor. In a gevent- or eventlet-patched process the
standard ``ThreadPoolExecutor`` would start green threads from the loop's native
thread, where no hub ever runs them (a hang), and its queue and futures use
green locks. This executor starts native threads (:func:`celeriac.blocking.start_native_thread`)
that wait on native locks, and hands results back with
``loop.call_soon_threadsafe``, never through a ``concurrent.futures.Future``.

A subclass of ``ThreadPoolExecutor`` only because ``loop.set_default_executor``
accepts nothing else (3.11+); none of its machinery is used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Callable
from typing import Any

from celeriac.blocking import native_lock, start_native_thread

#: Threads of a loop's default executor at most (asyncio's own default is min(32, cpus + 4)).
MAX_THREADS = 16

Work = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Callable[[Any, BaseException | None], None]]


class _Worker:
    """One native thread: runs work, then parks on its own native lock until handed more."""

    __slots__ = ("wake", "work")

    def __init__(self) -> None:
        self.wake: Any = native_lock()
        self.wake.acquire()
        self.work: Work | None = None


class NativeExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs calls on at most ``max_workers`` native threads, started as needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_workers: int = MAX_THREADS) -> None:
        super().__init__(max_workers=1, thread_name_prefix="celeriac-aio")
        self._loop = loop
        self._limit = max_workers
        self._guard: Any = native_lock()
        self._queue: deque[Work] = deque()
        self._idle: list[_Worker] = []
        self._count = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any,  # type: ignore[override]
               **kwargs: Any) -> asyncio.Future[Any]:
        """An asyncio future of the loop (``wrap_future`` passes it through): call from the
        loop's thread, as ``run_in_executor`` does."""
        future = self._loop.create_future()
        loop = self._loop

        def done(value: Any, error: BaseException | None) -> None:
            def settle() -> None:
                if future.cancelled():
                    return
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)

            if not loop.is_closed():
                loop.call_soon_threadsafe(settle)

        self._put((fn, args, kwargs, done))
        return future

    def _put(self, work: Work) -> None:
        with self._guard:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.work = work
                worker.wake.release()
                return
            if self._count >= self._limit:
                self._queue.append(work)
                return
            self._count += 1
        worker = _Worker()
        worker.work = work
        start_native_thread(lambda: self._serve(worker))

    def _serve(self, worker: _Worker) -> None:
        while True:
            work = worker.work
            worker.work = None
            if work is None:
                with self._guard:
                    self._count -= 1
                return
            fn, args, kwargs, done = work
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting coroutine
                done(None, exc)
            else:
                done(value, None)
            del work, fn, args, kwargs, done
            with self._guard:
                if self._queue:
                    worker.work = self._queue.popleft()
                    continue
                if self._closed:
                    self._count -= 1
                    return
                self._idle.append(worker)
            worker.wake.acquire()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; idle threads exit now, busy ones when their call returns
        (never waited for: a call may block for good)."""
        with self._guard:
            self._closed = True
            if cancel_futures:
                self._queue.clear()
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.work = None
            worker.wake.release()
