"""The async client API's machinery: send and wait from a coroutine without blocking its loop.

Every broker and result backend client in celeriac is blocking (SQLite, redis-py,
the AMQP connection). An asyncio program (FastAPI, aiohttp) must not make those
calls on its event loop, so:

* **Sending** (``Task.aapply_async``, ``adelay``, ``app.asend_task``,
  ``Signature.aapply_async``) is the ordinary blocking send run by
  :func:`run_blocking` on the loop's default executor (bounded: at most
  ``min(32, cpus + 4)`` threads unless the program sets its own), with the
  calling task's contextvars, so a send from inside a running task is still
  recorded as that task's child. One code path with the sync API: same options,
  same errors (unknown option, unserialisable argument, unreachable broker), same
  message.
* **Waiting** (``AsyncResult.aget``) never parks a thread per waiter. Each event
  loop has one :class:`ResultPoller` per result backend; every ``aget`` of that
  loop registers a future with it, and the poller looks up *all* waited-for ids
  in one ``backend.get_many`` call (one Redis ``MGET``, one SQLite query per 500
  ids) on the executor, settles the futures whose record is ready, and sleeps on
  the loop (5 ms, growing by half each time nothing new came, up to 100 ms; a new
  waiter is looked up at once). A thousand concurrent ``aget`` cost one thread
  and one round trip per poll, not a thousand threads. The poller stops when no
  one waits, so nothing is left behind when the program's loop ends.

Cancelling a coroutine that awaits ``aget`` removes its waiter; a lookup already
running on the executor finishes (a single short read) and its answer is dropped.
Cancelling one awaiting ``aapply_async`` cannot un-send: the publish already
running in the executor completes (as any ``asyncio.to_thread`` call does).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.blocking import native_lock
from celeriac.exceptions import TimeoutError

if TYPE_CHECKING:
    from celeriac.backends.base import ResultBackend, ResultRecord

T = TypeVar("T")

#: The poller's first pause after a look, growing by :data:`GROWTH` while nothing new
#: comes, up to :data:`MAX_PAUSE` (the same curve as a polling backend's ``wait``).
FIRST_PAUSE = 0.005
GROWTH = 1.5
MAX_PAUSE = 0.1


async def run_blocking(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the running loop's default executor, with the caller's
    contextvars (``asyncio.to_thread``).

    The loop's default executor rather than one of celeriac's own: it is bounded,
    shut down by ``asyncio.run`` at the end, and a worker's loop thread in a
    gevent/eventlet-patched process gives its loop a native-thread executor
    (:mod:`celeriac.aio`), which a pool created here would not be.
    """
    return await asyncio.to_thread(fn, *args, **kwargs)


class _Waiter:
    """One ``aget``: the future it awaits, and when it gives up."""

    __slots__ = ("deadline", "future", "interval", "looked", "task_id", "timeout")

    def __init__(self, task_id: str, future: asyncio.Future[ResultRecord],
                 timeout: float | None, interval: float | None) -> None:
        self.task_id = task_id
        self.future = future
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.interval = interval
        #: Looked up at least once: only then may it time out (as ``backend.wait`` looks
        #: before it checks its deadline, so ``timeout=0`` on a ready result returns it).
        self.looked = False


class ResultPoller:
    """Waits on one result backend for every ``aget`` of one event loop (see the module doc).

    Used only from its loop's thread, so it needs no lock: the only code running
    elsewhere is ``backend.get_many``, which touches none of its state.
    """

    def __init__(self, backend: ResultBackend) -> None:
        self.backend = backend
        self._waiters: dict[str, list[_Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        #: A waiter came since the last look: look again now, and poll fast again.
        self._fresh = False

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    async def wait(self, task_id: str, timeout: float | None = None,
                   interval: float | None = None) -> ResultRecord:
        """The ready record of ``task_id``; :class:`TimeoutError` after ``timeout`` seconds."""
        waiter = _Waiter(task_id, asyncio.get_running_loop().create_future(), timeout, interval)
        self._waiters.setdefault(task_id, []).append(waiter)
        self._fresh = True
        self._nudge()
        try:
            return await waiter.future
        finally:  # settled, failed, or the awaiting task was cancelled
            self._drop(waiter)

    def _nudge(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="celeriac-aget-poller")
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _drop(self, waiter: _Waiter) -> None:
        waiters = self._waiters.get(waiter.task_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[waiter.task_id]

    async def _run(self) -> None:
        pause = FIRST_PAUSE
        try:
            while True:
                if self._fresh:
                    self._fresh = False
                    pause = FIRST_PAUSE
                    await asyncio.sleep(0)  # the other agets started in this loop turn join the look
                if not self._waiters:
                    return
                await self._look()
                self._expire(time.monotonic())
                if not self._waiters:
                    return
                if not self._fresh:
                    await self._sleep(self._pause(pause))
                    pause = min(pause * GROWTH, MAX_PAUSE)
        finally:
            # Ending (no waiter left) or cancelled with the loop: nothing may wait on a
            # poller that no longer polls, and the registry must not keep it.
            self._task = None
            for waiters in list(self._waiters.values()):
                for waiter in list(waiters):
                    waiter.future.cancel()
                    self._drop(waiter)
            _forget(self)

    async def _look(self) -> None:
        """One ``get_many`` for every id waited for; settle the ready ones."""
        ids = list(self._waiters)
        looked = [w for task_id in ids for w in self._waiters[task_id]]
        try:
            records = await asyncio.get_running_loop().run_in_executor(None, self.backend.get_many, ids)
        except Exception as exc:  # e.g. the backend unreachable past its reconnect timeout
            for waiter in looked:
                self._settle(waiter, exc)
            return
        for waiter in looked:
            waiter.looked = True
        for task_id, record in zip(ids, records, strict=True):
            if record is not None and record.ready:
                for waiter in list(self._waiters.get(task_id, ())):
                    self._settle(waiter, record)

    def _settle(self, waiter: _Waiter, outcome: ResultRecord | BaseException) -> None:
        if not waiter.future.done():
            if isinstance(outcome, BaseException):
                waiter.future.set_exception(outcome)
            else:
                waiter.future.set_result(outcome)
        self._drop(waiter)

    def _expire(self, now: float) -> None:
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                if waiter.looked and waiter.deadline is not None and now >= waiter.deadline:
                    self._settle(waiter, TimeoutError(
                        f"result of {waiter.task_id} not ready after {waiter.timeout}s"))

    def _pause(self, backoff: float) -> float:
        """Until the next look: the backoff, or less when a waiter asked for a shorter
        ``interval`` or its deadline comes first."""
        pause = backoff
        now = time.monotonic()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if waiter.interval is not None:
                    pause = min(pause, waiter.interval)
                if waiter.deadline is not None:
                    pause = min(pause, waiter.deadline - now)
        return max(0.0, pause)

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the loop; a new waiter (:meth:`_nudge`) wakes it early."""
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


#: The pollers of each running loop, by backend. Weak on the loop: a loop that is
#: gone takes its (idle) pollers with it; a poller holds no reference to its loop.
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, ResultPoller]] = \
    weakref.WeakKeyDictionary()


#: Loops of several threads may share the registry: a lock of the OS (a patched one would
#: be a greenlet's), held only around dictionary operations.
_pollers_lock = native_lock()


def poller(backend: ResultBackend) -> ResultPoller:
    """The running loop's poller for ``backend`` (made on first use, dropped when idle)."""
    loop = asyncio.get_running_loop()
    with _pollers_lock:
        by_backend = _pollers.setdefault(loop, {})
        found = by_backend.get(id(backend))
        if found is None or found.backend is not backend:
            found = by_backend[id(backend)] = ResultPoller(backend)
        return found


def _forget(stopped: ResultPoller) -> None:
    loop = asyncio.get_running_loop()
    with _pollers_lock:
        by_backend = _pollers.get(loop, {})
        if by_backend.get(id(stopped.backend)) is stopped:
            del by_backend[id(stopped.backend)]


async def wait_for_record(backend: ResultBackend, task_id: str, *, timeout: float | None = None,
                          interval: float | None = None) -> ResultRecord:
    """The ready record of ``task_id`` in ``backend``, awaited on the running loop's
    shared poller: what ``AsyncResult.aget`` waits with."""
    return await poller(backend).wait(task_id, timeout, interval)
