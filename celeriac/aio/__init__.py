"""asyncio in celeriac: ``async def`` tasks on every pool (``docs/asyncio.md``).

An ``async def`` task runs as a coroutine on ONE event loop per worker process,
kept on a native OS thread (:mod:`celeriac.aio.loop`) whatever the pool; the pool's
slot (a thread, the main thread, a greenlet) waits for it and forwards what it is
hit with -- a soft limit, a hard limit, a terminate -- into the coroutine
(:mod:`celeriac.aio.await_`, :mod:`celeriac.aio.trampoline`). Its value then goes
through the same outcome mapping as a sync task's (:mod:`celeriac.worker.run`).

``-P asyncio`` runs its jobs as greenlets on one native thread
(:mod:`celeriac.aio.greenjobs`), sync task bodies on a bounded thread pool
(:mod:`celeriac.aio.syncbodies`), and watches its loop for blocking
(:mod:`celeriac.aio.monitor`). The async client API (``adelay``, ``aapply_async``,
``aget``) is :mod:`celeriac.aio.client`.

This module is imported by ``celeriac.task`` for every app: it imports nothing
heavy (asyncio is imported by the modules that run coroutines).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


def is_async_function(fn: Any) -> bool:
    """True for an ``async def`` function, also behind ``functools.partial`` and
    ``functools.wraps`` decorators that keep ``__wrapped__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        inspect.unwrap(fn, stop=lambda f: inspect.iscoroutinefunction(f)))


def is_async_task(task: Any) -> bool:
    """True when calling ``task`` returns a coroutine to await (``async def``, bound or
    not): the worker awaits it on the process's event loop."""
    fn = getattr(task, "fn", task)
    return is_async_function(fn)


__all__ = ["is_async_function", "is_async_task"]
