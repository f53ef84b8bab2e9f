"""The async client API (issue 13): ``adelay``/``aapply_async``/``asend_task`` and ``aget``
from a coroutine, on the memory, SQLite and Redis brokers and backends, with an embedded
worker (``start_worker``: a real consumer and threads pool in this process).

"The loop keeps running" is shown without timing: the task waits on a gate that only a
ticker coroutine on the caller's loop opens, so a blocked loop would never open it and
the ``aget`` would time out.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import normal_leg_only, take

from celeriac import Celeriac, group
from celeriac.aio import client
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import BrokerUnreachable, SerializationError, TimeoutError, UnknownSettingError
from celeriac.result import AsyncResult, ResultSet

KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=KINDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'celeriac.db'}"
    else:
        url = request.getfixturevalue("redis_url")
    app = Celeriac("tests", broker=url, backend=url)
    yield app
    app.close()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a task blocked behind a failed test


def define(app: Celeriac, gate: threading.Event) -> dict[str, Any]:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def gated(x: int) -> int:
        if not gate.wait(30):
            raise RuntimeError("the gate was never opened")
        return x

    @app.task
    def fail(message: str) -> None:
        raise ValueError(message)

    return {"add": add, "gated": gated, "fail": fail}


def run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro())


async def tick_until(gate: threading.Event, ticks: list[int], count: int = 3) -> None:
    """Tick on the loop; open the gate once it ticked ``count`` times."""
    while not gate.is_set():
        ticks.append(1)
        if len(ticks) >= count:
            gate.set()
        await asyncio.sleep(0.01)


def found(app: Celeriac) -> client.ResultPoller | None:
    """The running loop's poller for ``app``'s backend, if there is one (never makes one)."""
    return client._pollers.get(asyncio.get_running_loop(), {}).get(id(app.backend))


def waiting(app: Celeriac) -> int:
    poller = found(app)
    return 0 if poller is None else poller.waiting


def idle(app: Celeriac) -> bool:
    """No poller is left for ``app``'s backend on the running loop."""
    return found(app) is None


# -- sending and waiting --------------------------------------------------------------------
def test_adelay_then_aget_while_the_loop_keeps_ticking(app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)
    ticks: list[int] = []

    async def main() -> tuple[int, int]:
        result = await tasks["gated"].adelay(7)
        ticker = asyncio.create_task(tick_until(gate, ticks))
        value = await result.aget(timeout=30)
        await ticker
        plain = await (await tasks["add"].aapply_async((2, 3), countdown=0)).aget(timeout=30)
        return value, plain

    with start_worker(app, pool="threads", perform_ping_check=False):
        assert run(main) == (7, 5)
    assert len(ticks) >= 3


def test_hundreds_of_concurrent_agets_share_one_poller(app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)
    count = 300

    async def main() -> list[int]:
        results = await asyncio.gather(*(tasks["gated"].adelay(i) for i in range(count)))
        waits = asyncio.gather(*(r.aget(timeout=60) for r in results))
        while waiting(app) < count:  # every aget registered with the one poller
            await asyncio.sleep(0.01)
        threads = threading.active_count()
        gate.set()
        values = await waits
        assert threads < 60, threads  # the executor's threads, not one per aget
        return list(values)

    with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False):
        assert run(main) == list(range(count))


def test_cancelled_agets_leave_no_waiter_no_poller_and_no_thread(app: Celeriac) -> None:
    async def main() -> None:
        agets = [asyncio.create_task(AsyncResult(str(uuid.uuid4()), app).aget())
                 for _ in range(200)]
        while waiting(app) < len(agets):
            await asyncio.sleep(0.01)
        for task in agets:
            task.cancel()
        for task in agets:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert waiting(app) == 0
        while not idle(app):  # the poller stops once nobody waits
            await asyncio.sleep(0.01)

    app.backend.get("warm-up")  # a backend's own connection set-up is not the waits' doing
    before = set(threading.enumerate())
    run(main)
    # asyncio.run joined the executor's threads; nothing else was started for the waits.
    assert [t.name for t in threading.enumerate() if t not in before] == []


def test_result_set_timeout_names_the_first_member_not_ready(app: Celeriac, gate: threading.Event,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    tasks = define(app, gate)

    async def main() -> None:
        done = await tasks["add"].adelay(1, 1)
        pending = AsyncResult(str(uuid.uuid4()), app)
        results = ResultSet([done, pending, AsyncResult(str(uuid.uuid4()), app)])
        with pytest.raises(TimeoutError, match=rf"task 1 of 3 \({pending.id}\) not ready after 0.3s"):
            await results.aget(timeout=0.3)

    with start_worker(app, pool="threads", perform_ping_check=False):
        run(main)
    gc.collect()
    assert "never retrieved" not in caplog.text  # the members after it were seen or cancelled


def test_timeout_raises_celeriacs_timeout_error_and_zero_still_looks(
        app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)

    async def main() -> int:
        with pytest.raises(TimeoutError, match=r"not ready after 0\.2s"):
            await AsyncResult(str(uuid.uuid4()), app).aget(timeout=0.2)
        result = await tasks["add"].adelay(1, 1)
        await result.aget(timeout=30)
        assert waiting(app) == 0
        value: int = await result.aget(timeout=0)  # ready: looked at before the deadline counts
        return value

    with start_worker(app, pool="threads", perform_ping_check=False):
        assert run(main) == 2


def test_propagate_and_interval(app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)

    async def main() -> Any:
        result = await tasks["fail"].adelay("boom")
        with pytest.raises(ValueError, match="boom"):
            await result.aget(timeout=30, interval=0.01)
        return await result.aget(timeout=30, propagate=False)

    with start_worker(app, pool="threads", perform_ping_check=False):
        exc = run(main)
    assert isinstance(exc, ValueError) and str(exc) == "boom"


def test_send_errors_are_apply_asyncs(app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)

    async def main() -> None:
        with pytest.raises(SerializationError):
            await tasks["add"].adelay(object(), 1)
        with pytest.raises(UnknownSettingError, match="countdwn"):
            await tasks["add"].aapply_async((1, 2), countdwn=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="arguments are checked before sending"):
            await tasks["add"].adelay(1)  # type: ignore[call-arg]

    run(main)


def test_asend_task_signatures_and_result_sets(app: Celeriac, gate: threading.Event) -> None:
    tasks = define(app, gate)

    async def main() -> list[Any]:
        by_name = await app.asend_task(tasks["add"].name, (1, 2))
        signed = await tasks["add"].s(10).adelay(5)
        applied = await tasks["add"].s(1).aapply_async((1,))
        values = [await r.aget(timeout=30) for r in (by_name, signed, applied)]
        many = ResultSet([await tasks["add"].adelay(i, i) for i in range(5)])
        values.append(await many.aget(timeout=30))
        failing = ResultSet([await tasks["add"].adelay(1, 1), await tasks["fail"].adelay("x")])
        with pytest.raises(ValueError, match="x"):
            await failing.aget(timeout=30)
        values.append(await failing.aget(timeout=30, propagate=False))
        values.append(await group(tasks["add"].s(i, 1) for i in range(3)).delay().aget(timeout=30))
        return values

    with start_worker(app, pool="threads", perform_ping_check=False):
        values = run(main)
    assert values[:4] == [3, 15, 2, [0, 2, 4, 6, 8]]
    assert values[4][0] == 2 and isinstance(values[4][1], ValueError)
    assert values[5] == [1, 2, 3]  # a GroupResult is a ResultSet


def test_delay_and_get_inside_a_running_loop_do_not_deadlock(app: Celeriac, gate: threading.Event) -> None:
    """``delay()`` in a coroutine blocks the loop for one publish, then returns."""
    tasks = define(app, gate)

    async def main() -> int:
        value: int = await tasks["add"].delay(20, 22).aget(timeout=30)
        return value

    with start_worker(app, pool="threads", perform_ping_check=False):
        assert run(main) == 42


def test_eager_results_need_no_wait() -> None:
    app = Celeriac("tests", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> int:
        value: int = await (await add.adelay(2, 2)).aget()
        return value

    assert run(main) == 4


def test_an_unreachable_broker_raises_while_the_loop_keeps_ticking(tmp_path: Path) -> None:
    app = Celeriac("tests", broker="redis://127.0.0.1:1/0", backend="memory://",
                   broker_reconnect_timeout=0.5)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    gate = threading.Event()
    ticks: list[int] = []

    async def main() -> None:
        ticker = asyncio.create_task(tick_until(gate, ticks, count=1_000_000))
        try:
            with pytest.raises(BrokerUnreachable):
                await add.adelay(1, 2)
        finally:
            gate.set()
            await ticker

    run(main)
    assert ticks  # the loop ran while the send waited for the broker


#: A green worker process (its pool's offloader installed), where a NATIVE thread -- the one
#: a worker's event loop runs async tasks on -- sends with ``delay()`` on SQLite: the
#: offloaded SQLite calls must complete, not wait on a hub that thread does not have.
GREEN_NATIVE_SEND = textwrap.dedent('''
    import sys
    kind, url = sys.argv[1], sys.argv[2]
    if kind == "gevent":
        from gevent import monkey
        monkey.patch_all()
        import gevent
        hub = gevent.get_hub()
        offloader = lambda fn, *args: hub.threadpool.apply(fn, args)  # pools/gevent.py's
        green_sleep = gevent.sleep
    else:
        import warnings
        warnings.filterwarnings("ignore")
        import eventlet
        eventlet.monkey_patch()
        from eventlet import tpool
        offloader = lambda fn, *args: tpool.execute(fn, *args)  # pools/eventlet.py's
        green_sleep = eventlet.sleep
    from celeriac import Celeriac
    from celeriac.blocking import native_lock, set_offloader, start_native_thread

    set_offloader(offloader)
    app = Celeriac("green", broker=url, backend=url)

    @app.task(name="green.add")
    def add(x, y):
        return x + y

    done, sent = native_lock(), []
    done.acquire()

    def on_native_thread():
        try:
            sent.append(add.delay(1, 2).id)
        except BaseException as exc:
            sent.append(repr(exc))
        finally:
            done.release()

    start_native_thread(on_native_thread)
    for _ in range(1500):  # the hub keeps running meanwhile, as in a worker
        if done.acquire(False):
            print("sent", sent[0])
            break
        green_sleep(0.02)
    else:
        print("no answer after 30 s")
''')


@normal_leg_only
@pytest.mark.parametrize("kind", ["gevent", "eventlet"])
def test_delay_from_a_native_thread_of_a_green_process_completes(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'celeriac.db'}"
    proc = subprocess.run([sys.executable, "-c", GREEN_NATIVE_SEND, kind, url], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.startswith("sent "), proc.stdout + proc.stderr
    app = Celeriac("tests", broker=url, backend=url)
    try:
        assert [m.id for m in take(app)] == [proc.stdout.split()[1]]
    finally:
        app.close()
