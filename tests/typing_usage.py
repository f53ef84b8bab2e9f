"""Typed usage of the public API: mypy --strict checks this file (it is not a test module).

If a change to celeriac's types breaks what users write, mypy fails here.
"""

from __future__ import annotations

from typing import Any

from celeriac import AsyncResult, Celeriac, Task

app = Celeriac("typing_usage", broker="memory://", backend="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, name="feeds.fetch", queue="io", max_retries=3)
def fetch(self: Any, url: str) -> str:
    return f"{self.request.id}:{url}"


def use() -> None:
    task: Task[[int, int], int] = add
    total: int = add(2, 3)
    result: AsyncResult[int] = add.delay(2, 3)
    later: AsyncResult[str] = fetch.delay("http://example.invalid/feed")
    value: int = result.get(timeout=10)
    text: str = later.get(timeout=10)
    again = add.apply_async((2, 3), countdown=5, queue="q", priority=5, expires=60)
    state: str = again.status
    other = app.AsyncResult(again.id)
    print(task, total, value, text, state, other.ready(), app.send_task("tasks.add", args=[1, 2]))
