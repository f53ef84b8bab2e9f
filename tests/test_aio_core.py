"""The pieces under ``async def`` tasks: the trampoline, the loop thread, run_coroutine.

Real loops and threads; exceptions are raised in the waiting thread the way the
threads pool's watchdog does (``PyThreadState_SetAsyncExc``), so what is checked is
what a pool's slot does with them.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import sys
import threading
import time
from typing import Any

import pytest
from conftest import collector_off, normal_leg_only, wait_until

from celeriac.aio import await_ as aio_await
from celeriac.aio import is_async_function
from celeriac.aio.await_ import interrupt, run_coroutine
from celeriac.aio.loop import LoopThread, NativeSelectorLoop, new_loop, shared_loop
from celeriac.aio.trampoline import Trampoline
from celeriac.context import Request, current_request
from celeriac.exceptions import HardTimeLimit, SoftTimeLimitExceeded, Terminated

#: Raises in threads by their native ids and times native waits: the unpatched process's
#: view (tests/test_aio_eager.py and test_aio_green.py run in the gevent leg too).
pytestmark = normal_leg_only

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def raise_later(exc: type[BaseException], after: float) -> threading.Thread:
    """Raise ``exc`` in the calling thread after ``after`` seconds, as the threads pool's
    soft-limit watchdog and terminate do."""
    target = threading.get_ident()

    def fire() -> None:
        time.sleep(after)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(exc))

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


# -- the trampoline, on a loop of the test ------------------------------------------------

#: asyncio.timeout and Task.cancelling/uncancel came with 3.11 (3.10 runs the rest).
needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout, uncancel: 3.11+")


@needs_311
def test_injected_exception_is_raised_at_the_await_and_may_be_caught() -> None:
    async def body() -> str:
        try:
            await asyncio.sleep(30)
        except SoftTimeLimitExceeded:
            await asyncio.sleep(0)  # the task is not left cancelled: it can await again
            return "caught"
        return "slept"

    async def main() -> str:
        trampoline = Trampoline(body())
        task = asyncio.get_running_loop().create_task(trampoline)
        trampoline.task = task
        await asyncio.sleep(0.01)
        trampoline.inject(SoftTimeLimitExceeded("soft"))
        result: str = await task
        assert task.cancelling() == 0  # uncancel() took the cancellation back
        return result

    assert asyncio.run(main()) == "caught"


def test_the_more_severe_of_two_pending_injections_wins() -> None:
    seen: list[str] = []

    async def body() -> None:
        try:
            await asyncio.sleep(30)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    async def main() -> None:
        trampoline = Trampoline(body())
        task = asyncio.get_running_loop().create_task(trampoline)
        trampoline.task = task
        await asyncio.sleep(0.01)
        trampoline.inject(HardTimeLimit("hard"))
        trampoline.inject(SoftTimeLimitExceeded("soft"))  # later, milder: the hard one stays
        with pytest.raises(HardTimeLimit):
            await task

    asyncio.run(main())
    assert seen == ["HardTimeLimit"]


@needs_311
def test_injection_before_the_first_step_and_timeouts_inside_keep_working() -> None:
    async def uses_timeout() -> str:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(30)
        except TimeoutError:
            return "timed out"
        return "slept"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        early = Trampoline(uses_timeout())
        early.task = loop.create_task(early)
        early.inject(SoftTimeLimitExceeded("before it ran"))
        with pytest.raises(SoftTimeLimitExceeded):
            await early.task
        # Untouched, asyncio.timeout inside a trampoline behaves as without one.
        plain = Trampoline(uses_timeout())
        plain.task = loop.create_task(plain)
        assert await plain.task == "timed out"

    asyncio.run(main())


def test_a_cancellation_of_its_own_stays_a_cancellation() -> None:
    async def main() -> None:
        trampoline = Trampoline(asyncio.sleep(30))
        task = asyncio.get_running_loop().create_task(trampoline)
        trampoline.task = task
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


# -- run_coroutine: a thread waits, forwards, returns -------------------------------------

def test_value_context_and_exception_come_back_to_the_waiting_thread() -> None:
    async def body(x: int) -> tuple[int, str, str | None]:
        await asyncio.sleep(0.01)
        request = current_request.get()
        return x * 2, var.get(), request.id if request else None

    token = var.set("from the slot")
    reset = current_request.set(Request(id="r-1", task="t"))
    try:
        assert run_coroutine(body(21), event=threading.Event()) == (42, "from the slot", "r-1")
    finally:
        current_request.reset(reset)
        var.reset(token)

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        run_coroutine(fails(), event=threading.Event())


def test_a_finished_run_is_freed_without_the_cycle_collector() -> None:
    """The asyncio task and the trampoline it drives refer to each other: a run left that
    cycle behind (its coroutine, context and request with it) for a full collection to
    find, in a worker at -c 1000 a thousand of them per wave (bench/asyncio_compare.py)."""
    import weakref

    class Payload:
        pass

    refs: list[weakref.ref[Any]] = []

    async def body(payload: Payload) -> int:
        refs.append(weakref.ref(asyncio.current_task()))
        refs.append(weakref.ref(payload))
        await asyncio.sleep(0)
        return 7

    with collector_off():
        assert run_coroutine(body(Payload()), event=threading.Event(), job=None) == 7
        # The loop's thread lets go of its handles once it has run them.
        wait_until(lambda: all(ref() is None for ref in refs), timeout=5)


def test_a_failed_run_is_freed_without_the_cycle_collector() -> None:
    """The failed task holds its exception, whose traceback holds the frame that waited
    for it: that frame let go of the task, or the coroutine's locals stayed in a cycle."""
    import weakref

    class Payload:
        pass

    refs: list[weakref.ref[Any]] = []

    async def fails() -> None:
        payload = Payload()
        refs.append(weakref.ref(payload))
        await asyncio.sleep(0)
        raise KeyError("inside")

    def call() -> str:
        try:
            run_coroutine(fails(), event=threading.Event())
        except KeyError:
            return "raised"
        return "returned"

    with collector_off():
        assert call() == "raised"
        wait_until(lambda: refs and refs[0]() is None, timeout=5)


def test_soft_limit_in_the_waiting_thread_is_raised_in_the_coroutine() -> None:
    async def body() -> str:
        try:
            await asyncio.sleep(30)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "slept"

    raise_later(SoftTimeLimitExceeded, 0.2)
    assert run_coroutine(body(), event=threading.Event()) == "cleaned up"

    async def uncaught() -> None:
        await asyncio.sleep(30)

    raise_later(SoftTimeLimitExceeded, 0.2)
    with pytest.raises(SoftTimeLimitExceeded):
        run_coroutine(uncaught(), event=threading.Event())


def test_a_job_ending_exception_unwinds_the_coroutine_and_is_re_raised() -> None:
    unwound = threading.Event()

    async def body() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.set()
        return "never"

    raise_later(Terminated, 0.2)
    with pytest.raises(Terminated):
        run_coroutine(body(), event=threading.Event())
    assert unwound.is_set()


def test_the_hard_limit_the_slot_enforces_itself() -> None:
    seen: list[BaseException] = []

    async def body() -> None:
        try:
            await asyncio.sleep(30)
        except BaseException as exc:
            seen.append(exc)
            return  # swallowing it changes nothing: the run ended at its hard limit

    with pytest.raises(HardTimeLimit, match=r"hard time limit \(0.2s\)"):
        run_coroutine(body(), event=threading.Event(), hard=0.2)
    assert [type(exc) for exc in seen] == [HardTimeLimit]


def test_a_blocked_loop_keeps_the_slot_waiting_past_the_unwind(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """The process must look busy until the supervisor replaces it: the slot does not
    report the run as ended while the coroutine still holds the loop."""
    monkeypatch.setattr(aio_await, "UNWIND", 0.1)
    own = LoopThread(new_loop(use_uvloop=False))
    monkeypatch.setattr(aio_await, "shared_loop", lambda: own)

    async def blocks() -> None:
        time.sleep(1.0)  # holds the loop

    started = time.monotonic()
    with pytest.raises(HardTimeLimit):
        run_coroutine(blocks(), event=threading.Event(), hard=0.1)
    # Ended only when the loop came back (about 1 s), not at 0.1 + UNWIND.
    assert time.monotonic() - started >= 0.9
    own.stop()


def test_interrupt_reaches_the_coroutine_of_a_request() -> None:
    request = Request(id="r-2", task="t")
    outcome: list[Any] = []

    async def body() -> None:
        await asyncio.sleep(30)

    def slot() -> None:
        current_request.set(request)
        try:
            run_coroutine(body(), event=threading.Event())
        except BaseException as exc:
            outcome.append(exc)

    assert not interrupt(request, Terminated())  # nothing runs yet
    thread = threading.Thread(target=slot)
    thread.start()
    deadline = time.monotonic() + 10
    while not interrupt(request, Terminated()) and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.join(10)
    assert [type(exc) for exc in outcome] == [Terminated]


def test_called_from_the_loop_itself_it_does_not_deadlock() -> None:
    """An eager apply() inside an async task waits on a loop of its own."""
    async def inner() -> int:
        await asyncio.sleep(0.01)
        return 7

    async def outer() -> int:
        value: int = run_coroutine(inner(), event=threading.Event())
        return value + 1

    assert run_coroutine(outer(), event=threading.Event()) == 8


# -- the loop thread ------------------------------------------------------------------------

@pytest.mark.parametrize("use_uvloop", [False, True], ids=["selector", "uvloop"])
def test_loop_thread_runs_to_thread_sleep_and_tcp(use_uvloop: bool) -> None:
    if use_uvloop:
        pytest.importorskip("uvloop")
    own = LoopThread(new_loop(use_uvloop=use_uvloop))
    assert own.ident != threading.get_ident()

    async def body() -> list[Any]:
        name = await asyncio.to_thread(lambda: threading.current_thread().ident)
        await asyncio.sleep(0.01)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "localhost", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("localhost", port)  # getaddrinfo
        writer.write(b"ping\n")
        line = await reader.readline()
        writer.close()
        server.close()
        return [name is not None, line]

    future = asyncio.run_coroutine_threadsafe(body(), own.loop)
    assert future.result(10) == [True, b"ping\n"]
    own.stop()
    assert own.loop.is_closed()


class CountingLoop(NativeSelectorLoop):
    """The selector loop, counting the wake-ups asked of it from other threads."""

    wakes = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> Any:
        self.wakes += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_soon_batches_a_burst_into_one_wake_up_in_order_past_one_that_raises() -> None:
    loop = CountingLoop()
    own = LoopThread(loop)
    errors: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: errors.append(context["exception"]))
    try:
        hold, done = threading.Event(), threading.Event()
        seen: list[int] = []
        own.soon(lambda: hold.wait(5))  # the loop's turn runs this one and waits in it
        wait_until(lambda: loop.wakes == 1 and not own._drain_due, message="the first turn")
        for n in range(100):
            own.soon(lambda n=n: seen.append(n))  # type: ignore[misc]
        own.soon(lambda: 1 / 0)
        own.soon(done.set)
        hold.set()
        assert done.wait(5)
        assert seen == list(range(100))
        assert [type(e) for e in errors] == [ZeroDivisionError]
        assert loop.wakes == 2  # the first, and one for the burst queued behind it
    finally:
        own.stop()


def test_shared_loop_is_one_per_process() -> None:
    assert shared_loop() is shared_loop()
    assert shared_loop().alive


def test_async_functions_are_recognised() -> None:
    import functools

    async def coroutine_function(x: int) -> int:
        return x

    def plain(x: int) -> int:
        return x

    @functools.wraps(coroutine_function)
    def wrapper(*args: Any) -> Any:
        return coroutine_function(*args)

    assert is_async_function(coroutine_function)
    assert is_async_function(functools.partial(coroutine_function, 1))
    assert is_async_function(wrapper)
    assert not is_async_function(plain)


def test_native_event_of_a_patched_process_behaves_as_threading_event() -> None:
    from celeriac.aio.events import _NativeEvent

    event = _NativeEvent()
    assert not event.is_set() and not event.wait(0.01)
    threading.Timer(0.05, event.set).start()
    assert event.wait(5) and event.is_set()
    event.set()  # twice is harmless
    event.clear()
    assert not event.wait(0) and not event.is_set()
