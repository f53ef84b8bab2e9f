"""The async client API against the real CLI worker, driven from an asyncio program (as a
FastAPI or aiohttp app would): ``adelay``/``aapply_async``/``asend_task`` and ``aget``
on SQLite, Redis and RabbitMQ (results on Redis) brokers.

The worker runs sync tasks: the client API is the same whatever the task is. A task waits
for a file that only a ticker coroutine on the caller's loop creates, so an ``aget`` that
blocked the loop would time out instead of returning.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from conftest import BROKER_KINDS, project_on

from celeriac.exceptions import TimeoutError
from celeriac.result import AsyncResult, ResultSet

GATED = '''
@app.task
def gated(path, value):
    wait_for(path, timeout=60)
    return value
'''


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_an_asyncio_program_sends_and_awaits_without_blocking_its_loop(
        request: pytest.FixtureRequest, kind: str) -> None:
    project = project_on(request, kind)
    project.write_tasks(GATED)
    project.start_worker("-P", "threads", "-c", "4")
    app = project.app()
    gate = project.path / "gate"
    ticks: list[int] = []

    async def ticker() -> None:
        while len(ticks) < 3:
            ticks.append(1)
            await asyncio.sleep(0.01)
        gate.touch()

    async def program() -> dict[str, Any]:
        gated = await app.tasks["tasks.gated"].adelay(str(gate), "opened")
        tick = asyncio.create_task(ticker())
        figures: dict[str, Any] = {"gated": await gated.aget(timeout=60)}
        await tick
        adds = await asyncio.gather(*(app.tasks["tasks.add"].adelay(i, i) for i in range(100)))
        figures["adds"] = await asyncio.gather(*(r.aget(timeout=60) for r in adds))
        figures["set"] = await ResultSet(adds[:3]).aget(timeout=60)
        by_name = await app.asend_task("tasks.add", (40, 2))
        figures["by_name"] = await by_name.aget(timeout=60)
        # A plain delay() in a coroutine works too (it blocks the loop for one publish).
        figures["delay"] = await app.tasks["tasks.add"].delay(1, 2).aget(timeout=60)
        failed = await app.tasks["tasks.fail"].aapply_async(("boom",), countdown=0)
        figures["failed"] = await failed.aget(timeout=60, propagate=False)
        with pytest.raises(ValueError, match="boom"):
            await failed.aget(timeout=60)
        with pytest.raises(TimeoutError):
            await AsyncResult(str(uuid.uuid4()), app).aget(timeout=0.3)
        return figures

    figures = asyncio.run(program())
    assert figures["gated"] == "opened" and len(ticks) >= 3
    assert figures["adds"] == [2 * i for i in range(100)]
    assert figures["set"] == [0, 2, 4]
    assert (figures["by_name"], figures["delay"]) == (42, 3)
    assert isinstance(figures["failed"], ValueError) and str(figures["failed"]) == "boom"
