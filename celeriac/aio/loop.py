"""The per-process event loop, on a native OS thread.

Every ``async def`` task of a worker process (whatever its pool) and every eager
run of one runs on this one loop: :func:`shared_loop` starts it lazily, on the
first use in a process, and again in a forked child (a loop never crosses a fork).

It is a real OS thread even where gevent or eventlet patched ``threading``
(``asyncio.run`` inside a greenlet breaks: asyncio-gevent #16), and the loop in
it must not use anything the patching made green, as no hub runs in that thread:

* uvloop's loop when uvloop is installed (``pip install 'celeriac[asyncio]'``):
  libuv does its own I/O, DNS and timers;
* otherwise a selector loop on the OS's own ``epoll`` (gevent's patch removes
  ``select.epoll`` and swaps ``selectors.DefaultSelector`` for a green one), with
  its wake-up socket pair and ``getaddrinfo``/``getnameinfo`` taken from the C
  ``_socket`` module, which no patch touches;
* in both, a default executor of native threads (:mod:`celeriac.aio.threads`) for
  ``asyncio.to_thread`` and ``run_in_executor(None, ...)``.

The thread is a daemon: at process exit :func:`stop_shared_loop` (an ``atexit``
hook) stops the loop, cancels what still runs on it and closes it.
"""

from __future__ import annotations

import _socket
import asyncio
import atexit
import contextlib
import logging
import os
import selectors
from collections import deque
from collections.abc import Callable
from typing import Any

from celeriac.aio.threads import NativeExecutor
from celeriac.blocking import native_function, native_ident, native_lock, start_native_thread

log = logging.getLogger("celeriac.worker")

#: Seconds :meth:`LoopThread.stop` waits for the loop to finish cancelling its tasks.
STOP_TIMEOUT = 5.0


def native_selector() -> selectors.BaseSelector:
    """An epoll selector of the OS (a poll one where there is no epoll), never a green one."""
    try:
        epoll = native_function("select", "epoll")
    except AttributeError:
        epoll = None
    if epoll is None:
        poll = native_function("select", "poll")

        class NativePoll(selectors._PollLikeSelector):
            _selector_cls = poll
            _EVENT_READ = 1  # select.POLLIN
            _EVENT_WRITE = 4  # select.POLLOUT

        return NativePoll()
    return _EpollSelector(epoll)


class _EpollSelector(selectors.BaseSelector):
    """``selectors.EpollSelector`` on a given ``epoll`` class (the patched module lost it)."""

    def __init__(self, epoll: Any) -> None:
        self._epoll = epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._epoll.register(fd, _mask(events))
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = self._keys.pop(fd)
        with contextlib.suppress(OSError):  # closed already: epoll forgot it
            self._epoll.unregister(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = self._keys[fd]
        if events != key.events:
            self._epoll.modify(fd, _mask(events))
        key = key._replace(events=events, data=data)
        self._keys[fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            timeout = max(timeout, 1e-3)  # epoll counts milliseconds: never spin just below one
        ready = []
        try:
            found = self._epoll.poll(timeout, max(len(self._keys), 1))
        except InterruptedError:
            return []
        for fd, mask in found:
            key = self._keys.get(fd)
            if key is not None:
                events = ((selectors.EVENT_READ if mask & ~_EPOLLOUT else 0)
                          | (selectors.EVENT_WRITE if mask & ~_EPOLLIN else 0))
                ready.append((key, events & key.events))
        return ready

    def get_map(self) -> Any:
        return self._keys

    def close(self) -> None:
        self._epoll.close()
        self._keys.clear()


_EPOLLIN, _EPOLLOUT = 0x001, 0x004


def _mask(events: int) -> int:
    return ((_EPOLLIN if events & selectors.EVENT_READ else 0)
            | (_EPOLLOUT if events & selectors.EVENT_WRITE else 0))


class NativeSelectorLoop(asyncio.SelectorEventLoop):
    """A selector loop that touches nothing a monkey patch made green."""

    def __init__(self) -> None:
        super().__init__(native_selector())

    def _make_self_pipe(self) -> None:
        # asyncio's own uses socket.socketpair(), green when patched; _socket's never is.
        self._ssock, self._csock = _socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._internal_fds += 1  # type: ignore[attr-defined]
        self._add_reader(self._ssock.fileno(), self._read_from_self)  # type: ignore[attr-defined]

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:
        return await self.run_in_executor(None, _socket.getaddrinfo, host, port, family, type,
                                          proto, flags)

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        return await self.run_in_executor(None, _socket.getnameinfo, sockaddr, flags)


def new_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A loop fit for a native thread of any process: uvloop's if installed (and wanted)."""
    loop: asyncio.AbstractEventLoop
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
        else:
            loop = uvloop.new_event_loop()
    if not use_uvloop:
        loop = NativeSelectorLoop()
    loop.set_default_executor(NativeExecutor(loop))
    return loop


class LoopThread:
    """An event loop running forever on a native thread of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or new_loop()
        #: The process this loop belongs to (a forked child starts its own).
        self.pid = os.getpid()
        #: The native thread id of the loop's thread (``sys._current_frames()`` key).
        self.ident = 0
        self._started: Any = native_lock()
        self._started.acquire()
        self._ended: Any = native_lock()
        self._ended.acquire()
        #: Callbacks from other threads for the loop's next turn (:meth:`soon`), and
        #: whether a turn is asked for already.
        self._soon: deque[Callable[[], None]] = deque()
        self._drain_due = False
        start_native_thread(self._run)
        self._started.acquire()

    def _run(self) -> None:
        self.ident = native_ident()
        self.loop.call_soon(self._started.release)
        try:
            self.loop.run_forever()
        finally:
            self._ended.release()

    def soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop soon, from any thread: ``call_soon_threadsafe``,
        batched. Callbacks queued while a batch is asked for and not yet begun join it,
        so a pool that starts a thousand coroutines in one burst wakes the loop's thread
        once (one handle, one write to its wake-up descriptor) rather than a thousand
        times, each wake-up a contender for the GIL (bench/asyncio_compare.py). In order;
        one that raises is reported to the loop's exception handler, as the loop itself
        would, and the others still run."""
        self._soon.append(callback)
        if not self._drain_due:
            self._drain_due = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except BaseException:  # the loop is closed: nothing will run it
                self._drain_due = False
                raise

    def _drain(self) -> None:
        # Cleared first: what is queued from now on either is taken below or asks anew.
        self._drain_due = False
        pending = self._soon
        while pending:
            callback = pending.popleft()
            try:
                callback()
            except Exception as exc:
                self.loop.call_exception_handler({
                    "message": f"exception in callback {callback!r}", "exception": exc})

    @property
    def alive(self) -> bool:
        return not self.loop.is_closed() and self.pid == os.getpid()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cancel what runs on the loop, stop it and close it (from any other thread)."""
        if self.loop.is_closed() or self.pid != os.getpid():
            return
        loop = self.loop

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            await loop.shutdown_asyncgens()
            loop.stop()

        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(cancel_all()))
        except RuntimeError:
            return  # closed meanwhile
        if self._ended.acquire(True, timeout + 1.0):
            executor = getattr(loop, "_default_executor", None)
            if executor is not None:
                executor.shutdown(wait=False)
            loop.close()
        else:
            log.warning("the asyncio loop thread did not stop within %.0fs", timeout + 1.0)


_shared: LoopThread | None = None
_shared_guard: Any = native_lock()


def _forget_after_fork() -> None:
    """In a forked child the parent's loop thread does not exist: start afresh."""
    global _shared, _shared_guard
    _shared, _shared_guard = None, native_lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def shared_loop() -> LoopThread:
    """This process's loop thread, started on first use (and again after a fork)."""
    global _shared
    shared = _shared
    if shared is not None and shared.alive:
        return shared
    with _shared_guard:
        shared = _shared
        if shared is None or not shared.alive:
            first = shared is None
            shared = _shared = LoopThread()
            if first:
                atexit.register(stop_shared_loop)
        return shared


def stop_shared_loop() -> None:
    """Stop this process's loop thread if it runs (process shutdown)."""
    global _shared
    shared, _shared = _shared, None
    if shared is not None:
        shared.stop()
