"""Where blocking calls run.

SQLite (and any other library without cooperative I/O) blocks the calling OS
thread. Under a green pool that thread is the event loop, so every broker and
backend call that may block goes through :func:`offload`. A green pool installs
its own offloader (a call on the hub's thread pool) when it starts; in thread
and process pools the default simply calls the function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Offloader = Callable[..., Any]


def _direct(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


_offloader: Offloader = _direct


def offload(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` where blocking is harmless and return its result."""
    result: T = _offloader(fn, *args)
    return result


def set_offloader(offloader: Offloader | None) -> None:
    """Install the process-wide offloader (None restores direct calls)."""
    global _offloader
    _offloader = offloader or _direct
