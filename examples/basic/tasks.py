"""A small celeriac app: the demo and the README use it."""

from __future__ import annotations

import time

from celeriac import Celeriac

# Nothing configured: messages and results live in ./celeriac.db (SQLite).
app = Celeriac("tasks")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow_square(x: int) -> int:
    time.sleep(0.2)
    return x * x


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self, succeed_on: int) -> str:  # type: ignore[no-untyped-def]
    """Fails until its retry number reaches ``succeed_on``, to show retries."""
    if self.request.retries < succeed_on:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries} failed"))
    return f"succeeded after {self.request.retries} retries"
