"""Raising an exception in another OS thread: ``PyThreadState_SetAsyncExc``.

The threads pool delivers its soft time limit and ``revoke(terminate=True)``
this way, and the asyncio pool forwards time limits and terminations to the
thread that runs a synchronous task's body. CPython raises the exception in
the target thread at its next bytecode boundary: a thread inside one long C
call (``time.sleep(60)``, a socket read without a timeout) only sees it when
that call returns.
"""

from __future__ import annotations

import ctypes


def raise_in_thread(ident: int, exc: type[BaseException]) -> None:
    """Have the thread ``ident`` raise ``exc`` (a class: CPython instantiates it there)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


def cancel_raise_in_thread(ident: int) -> None:
    """Drop an exception :func:`raise_in_thread` asked for that the thread has not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
