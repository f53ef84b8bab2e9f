"""Where blocking calls run.

SQLite (and any other library without cooperative I/O) blocks the calling OS
thread. In a green process that thread runs the event loop (the *hub*), so
every broker and backend call that may block goes through :func:`offload`:

* A **green worker pool** installs its own offloader when it starts (a call on
  its hub's thread pool) and removes it when it stops.
* Otherwise, in a process that **gevent or eventlet has monkey-patched** -- a
  green *client*: a web app sending tasks from request greenlets, a script
  waiting on results -- ``offload`` notices by itself and runs the call on the
  hub's native thread pool (gevent's ``hub.threadpool``, 10 threads unless the
  program sets ``maxsize``; eventlet's ``tpool``, ``EVENTLET_THREADPOOL_SIZE``).
  A call made where no greenlet can be waiting -- a gevent thread with no hub
  yet, a thread of the pool itself -- runs in place, so offloaded code that
  offloads again never waits on itself.
* In **any other process** it simply calls the function.

"Patched" means the ``socket`` module was patched (every gevent and eventlet
program does that, also with ``GEVENT_PATCHTHREAD=N``). Besides keeping the hub
running while SQLite waits for its write lock, the thread pool bounds the number
of SQLite connections: connections are per thread, and in a patched process
``threading.local`` is per greenlet, so calls made on the greenlets themselves
would open one connection per greenlet.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Offloader = Callable[..., Any]


def _green_offloader() -> Offloader | None:
    """The native thread pool to run a blocking call on, here and now; None to call in place.

    Not None only in a process monkey-patched by gevent or eventlet, on a thread
    where greenlets run. Costs two dictionary lookups in an unpatched process.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("socket"):
        import gevent
        from gevent._hub_local import get_hub_if_exists  # gevent.get_hub() would create one

        hub = get_hub_if_exists()
        # No hub in this thread: no greenlet can be waiting here (spawning one creates
        # the hub), and threads of the hub's pool have none either. In the hub itself
        # (a loop callback) nothing may wait, so blocking briefly is all there is.
        if hub is None or gevent.getcurrent() is hub:
            return None
        threadpool = hub.threadpool

        def on_hub_threadpool(fn: Callable[..., Any], *args: Any) -> Any:
            return threadpool.apply(fn, args)

        return on_hub_threadpool
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("socket"):
        from eventlet import tpool  # runs the call in place when already on a tpool thread

        execute: Offloader = tpool.execute
        return execute
    return None


def _native_thread(name: str) -> Any:
    """``_thread.<name>`` as the OS provides it, even where gevent or eventlet patched it."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return gevent_monkey.get_original("_thread", name)
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return getattr(eventlet_patcher.original("_thread"), name)
    import _thread

    return getattr(_thread, name)


def native_lock() -> Any:
    """A lock of the OS, even in a monkey-patched process (``threading.Lock`` is green there).

    For state shared by offloaded calls, which run on native threads of a pool: a
    green lock is only safe within its hub's thread (eventlet's is not thread-safe
    at all). Hold it only around code that never switches greenlets.
    """
    return _native_thread("allocate_lock")()


def native_local() -> Any:
    """A thread-local of the OS, even in a monkey-patched process.

    There ``threading.local`` is per greenlet, and gevent's is not safe to share
    with the native threads of a hub's pool, where offloaded calls run. Per OS
    thread is what SQLite connections need (greenlets of one thread never
    interleave inside a call that does not switch).
    """
    return _native_thread("_local")()


def start_native_thread(fn: Callable[[], object]) -> None:
    """Run ``fn`` on a new thread of the OS, even in a monkey-patched process.

    For a thread that must keep running while the hub is blocked (the AMQP
    connection owner sends heartbeats while a task hogs the hub). No join: the
    thread signals its end itself (a :func:`native_lock` it releases).
    """
    _native_thread("start_new_thread")(fn, ())


def native_ident() -> int:
    """The OS thread id of the calling thread (the key of ``sys._current_frames()``), even
    in a monkey-patched process, where ``threading.get_ident`` names the greenlet."""
    ident: int = _native_thread("get_ident")()
    return ident


def native_function(module: str, name: str) -> Any:
    """``module.name`` as the OS provides it, even where gevent or eventlet patched the module.

    eventlet patches ``os.read``/``os.write`` to wait on the hub when a non-blocking
    fd has nothing to give; a native thread must get ``BlockingIOError`` instead.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched(module):
        return gevent_monkey.get_original(module, name)
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched(module):
        return getattr(eventlet_patcher.original(module), name)
    return getattr(importlib.import_module(module), name)


def native_poll() -> Any:
    """A ``select.poll()`` object of the OS, even where gevent or eventlet patched ``select``.

    gevent's patch removes ``select.poll``, and a patched wait would need a hub on
    the calling thread; a native thread that owns a socket (the AMQP connection
    owner) waits with this instead. ``poll``, not ``select``: no FD_SETSIZE limit
    in a process that has a thousand sockets open.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("select"):
        return gevent_monkey.get_original("select", "poll")()
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("select"):
        return eventlet_patcher.original("select").poll()
    import select

    return select.poll()


def _default(fn: Callable[..., T], *args: Any) -> T:
    """No pool installed an offloader: the hub's thread pool if patched, else in place."""
    green = _green_offloader()
    if green is None:
        return fn(*args)
    result: T = green(fn, *args)
    return result


_offloader: Offloader = _default


def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` where blocking is harmless and return its result."""
    result: T = _offloader(fn, *args)
    return result


def set_offloader(offloader: Offloader | None) -> None:
    """Install the process-wide offloader (None restores the default, see the module doc)."""
    global _offloader
    _offloader = offloader or _default
