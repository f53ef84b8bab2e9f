"""Events a native thread (the loop's) can set and a pool's slot can wait on.

The slot waiting for a coroutine must wait its own way -- a thread on an OS lock,
a greenlet cooperatively, letting its hub run the other greenlets -- while the
coroutine ends on the loop's native thread, which must wake it from there:

* :func:`native_event`: ``threading.Event`` of an unpatched process (threads, solo,
  prefork, and clients);
* :func:`gevent_event`: a gevent ``Event`` of the waiter's hub, set through an async
  watcher of the hub's loop (a gevent event is not thread-safe itself);
* :func:`eventlet_event`: an eventlet ``Event`` set by a dispatcher green thread of
  the waiter's hub, which one socket pair per process wakes (eventlet's hub has no
  thread-safe callback, and its ``tpool`` has ~20 threads, too few to park waiters in).

:func:`threadsafe_event` picks the right one for the calling thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from typing import Any

from celeriac.blocking import native_function, native_ident, native_lock
from celeriac.pools.base import EventLike


class _NativeEvent:
    """``threading.Event`` on an OS lock: in a patched process ``threading.Event`` is
    green (even the original class, whose module's ``Lock`` the patch replaced)."""

    __slots__ = ("_flag", "_gate", "_guard")

    def __init__(self) -> None:
        self._flag = False
        self._gate: Any = native_lock()  # held while the event is clear
        self._gate.acquire()
        self._guard: Any = native_lock()

    def set(self) -> None:
        with self._guard:
            if not self._flag:
                self._flag = True
                self._gate.release()

    def clear(self) -> None:
        with self._guard:
            if self._flag:
                self._flag = False
                self._gate.acquire()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        if self._gate.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._gate.release()
        return self._flag


def native_event() -> EventLike:
    """An event of the OS, even in a patched process (``threading.Event`` elsewhere)."""
    if _patched():
        return _NativeEvent()
    return threading.Event()


def _patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("socket"))


class _GeventEvent:
    """A gevent Event of one hub, set through an async watcher of that hub's loop, whose
    ``send()`` is safe from any thread. The started watcher also keeps the hub's loop
    alive while a greenlet waits: with nothing else to wait for (an eager run in a
    patched client), gevent would otherwise raise ``LoopExit``."""

    __slots__ = ("_event", "_watcher")
    #: Waited on by a greenlet, whose pool raises limits in it at once (no slices needed).
    cooperative = True

    def __init__(self) -> None:
        import gevent
        import gevent.event

        self._event = gevent.event.Event()
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._fire)

    def _fire(self) -> None:
        self._event.set()
        self._watcher.close()

    def set(self) -> None:
        self._watcher.send()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


def gevent_event() -> EventLike:
    """An event a greenlet of this thread waits on cooperatively and any thread sets."""
    return _GeventEvent()


class _EventletBridge:
    """One per process: a socket pair whose reading end a green thread of the hub watches.

    ``set()`` from another native thread queues the event and writes a byte with the
    C ``write()``; the dispatcher green thread reads it and sets the queued events in
    the hub's thread, where eventlet's events belong.
    """

    def __init__(self) -> None:
        import _socket

        import eventlet
        from eventlet.hubs import trampoline

        self.thread = native_ident()
        self._write = native_function("os", "write")
        self._reader, writer = _socket.socketpair()
        self._reader.setblocking(False)
        writer.setblocking(False)
        self._writer = writer
        self._queue: deque[Any] = deque()
        self._lock: Any = native_lock()
        self._trampoline = trampoline
        eventlet.spawn_n(self._dispatch)

    def post(self, event: Any) -> None:
        self._queue.append(event)
        # A full pipe holds wake-ups already: the dispatcher will drain the queue.
        with contextlib.suppress(BlockingIOError):
            self._write(self._writer.fileno(), b"\0")

    def _dispatch(self) -> None:
        reader = self._reader
        while True:
            self._trampoline(reader.fileno(), read=True)
            try:
                while reader.recv(4096):
                    pass
            except BlockingIOError:
                pass
            while self._queue:
                self._queue.popleft().send_once()


class _EventletEvent:
    """An eventlet-hub event (patched ``threading.Event``); :meth:`set` from any thread."""

    __slots__ = ("_bridge", "_event")
    #: Waited on by a green thread, whose pool raises limits in it at once.
    cooperative = True

    def __init__(self, bridge: _EventletBridge) -> None:
        import threading as green_threading  # patched by eventlet: waits cooperatively

        self._bridge = bridge
        self._event = green_threading.Event()

    def send_once(self) -> None:
        self._event.set()

    def set(self) -> None:
        if native_ident() == self._bridge.thread:
            self._event.set()
        else:
            self._bridge.post(self)

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


_bridge: _EventletBridge | None = None


def eventlet_event() -> EventLike:
    """An event a green thread of the hub waits on cooperatively and any thread sets
    (call it from the hub's thread)."""
    global _bridge
    if _bridge is None:
        _bridge = _EventletBridge()
    return _EventletEvent(_bridge)


def threadsafe_event() -> EventLike:
    """The event for the calling thread: green where a hub runs greenlets here, else native."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        from gevent._hub_local import get_hub_if_exists

        return gevent_event() if get_hub_if_exists() is not None else native_event()
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket"):
        from eventlet import hubs

        hub = getattr(hubs._threadlocal, "hub", None)
        return eventlet_event() if hub is not None else native_event()
    return threading.Event()
