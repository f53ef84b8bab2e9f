"""``async def`` tasks outside a worker: ``Task.is_async``, calling one directly, and
eager runs (``apply()``, ``task_always_eager``), also from inside a running loop, with
the same signals, retries and errors as a sync task's eager run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from celeriac import Celeriac, signals
from celeriac.exceptions import SerializationError


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("tests", broker="memory://", backend="memory://")


def test_is_async_for_plain_and_bound_tasks(app: Celeriac) -> None:
    @app.task
    async def plain(x: int) -> int:
        return x

    @app.task(bind=True)
    async def bound(self: Any, x: int) -> int:
        return x

    @app.task
    def sync(x: int) -> int:
        return x

    assert plain.is_async and bound.is_async
    assert not sync.is_async


def test_calling_an_async_task_returns_its_coroutine(app: Celeriac) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    coroutine = add(1, 2)
    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 3


def test_apply_awaits_the_coroutine_with_its_request(app: Celeriac) -> None:
    @app.task(bind=True)
    async def who(self: Any, x: int) -> list[Any]:
        await asyncio.sleep(0.01)
        return [x, self.request.id, self.request.is_eager]

    result = who.apply((5,), task_id="eager-1")
    assert result.get() == [5, "eager-1", True]
    app.conf.task_always_eager = True
    assert who.delay(6).get()[0] == 6


def test_apply_from_inside_a_running_loop(app: Celeriac) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    async def handler() -> int:
        value: int = double.apply((4,)).get()  # blocks this loop's thread meanwhile
        return value

    assert asyncio.run(handler()) == 8


def test_failures_retries_and_signals_as_for_a_sync_task(app: Celeriac) -> None:
    events: list[str] = []

    def prerun(sender: Any = None, **kwargs: Any) -> None:
        events.append(f"prerun {sender.name}")

    def postrun(sender: Any = None, state: str | None = None, **kwargs: Any) -> None:
        events.append(f"postrun {state}")

    signals.task_prerun.connect(prerun)
    signals.task_postrun.connect(postrun)
    try:
        @app.task(bind=True, max_retries=2)
        async def flaky(self: Any) -> int:
            await asyncio.sleep(0)
            if self.request.retries < 2:
                raise self.retry(countdown=0)
            return self.request.retries

        @app.task
        async def bad() -> object:
            return object()

        assert flaky.apply().get() == 2
        result = bad.apply()
        assert result.status == "FAILURE"
        with pytest.raises(SerializationError, match="cannot be encoded as JSON"):
            result.get()
    finally:
        signals.task_prerun.disconnect(prerun)
        signals.task_postrun.disconnect(postrun)
    postruns = [event for event in events if event.startswith("postrun")]
    assert postruns == ["postrun RETRY", "postrun RETRY", "postrun SUCCESS", "postrun FAILURE"]
    assert len(events) == 2 * len(postruns) and events[0].endswith("flaky")


def test_map_and_starmap_of_an_async_task_await_each_call(app: Celeriac) -> None:
    @app.task
    async def add(x: int, y: int = 10) -> int:
        await asyncio.sleep(0)
        return x + y

    app.conf.task_always_eager = True
    assert add.map([1, 2]).delay().get() == [11, 12]
    assert add.starmap([(1, 2), (3, 4)]).delay().get() == [3, 7]
