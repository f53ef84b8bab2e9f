"""What 1,000 concurrent ``await result.aget()`` cost one event loop, against the obvious
alternative (``await asyncio.to_thread(result.get)`` per result), on SQLite and Redis.

No worker: the N results are stored straight into the backend (one ``store_many``, from
another thread) ``--wait`` seconds after the N waits started, so only waiting is
measured. Per approach and backend, medians of ``--repeat`` runs:

* ``done ms``: from the ``store_many`` returning to the last wait returning;
* ``loop lag ms``: the worst lateness of a 10 ms ticker on the loop during the run;
* ``threads``: the most threads the process had meanwhile;
* ``probe ms``: how long an unrelated ``asyncio.to_thread(noop)`` started during the
  wait took (the loop's default executor is the app's too: starving it stalls the app);
* ``looks``: ``get_many`` calls the shared poller made (aget only).

Run: ``.venv/bin/python bench/aio_client.py [-n 1000] [--wait 1] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redisserver import RedisServer

from celeriac import Celeriac
from celeriac.aio import client
from celeriac.backends.base import ResultRecord
from celeriac.result import AsyncResult
from celeriac.states import SUCCESS


async def one_run(app: Celeriac, approach: str, n: int, wait: float) -> dict[str, float]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    results = [AsyncResult(i, app) for i in ids]
    stored = threading.Event()
    stored_at: list[float] = []
    lag = [0.0]
    threads = [threading.active_count()]
    running = True

    async def ticker() -> None:
        while running:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lag[0] = max(lag[0], time.monotonic() - before - 0.01)
            threads[0] = max(threads[0], threading.active_count())

    def store() -> None:
        time.sleep(wait)
        app.backend.store_many([ResultRecord(task_id=i, status=SUCCESS, result=k, date_done=time.time())
                                for k, i in enumerate(ids)])
        stored_at.append(time.monotonic())
        stored.set()

    if approach == "aget":
        waits = [r.aget(timeout=60) for r in results]
    else:
        waits = [asyncio.to_thread(r.get, timeout=60) for r in results]
    tick = asyncio.create_task(ticker())
    threading.Thread(target=store, daemon=True).start()
    gathered = asyncio.gather(*waits)
    await asyncio.sleep(wait / 2)
    probe_start = time.monotonic()
    await asyncio.to_thread(lambda: None)
    probe = time.monotonic() - probe_start
    values = await gathered
    done = time.monotonic()
    running = False
    await tick
    assert values == list(range(n)), "wrong values"
    return {"done ms": (done - stored_at[0]) * 1000, "loop lag ms": lag[0] * 1000,
            "threads": float(threads[0]), "probe ms": probe * 1000}


def measure(app: Celeriac, approach: str, n: int, wait: float) -> dict[str, float]:
    counted: dict[str, Any] = {}
    original = client.ResultPoller._look

    async def counting(self: client.ResultPoller) -> None:
        counted["looks"] = counted.get("looks", 0) + 1
        await original(self)

    client.ResultPoller._look = counting  # type: ignore[method-assign]  # count, change nothing
    try:
        figures = asyncio.run(one_run(app, approach, n, wait))
    finally:
        client.ResultPoller._look = original  # type: ignore[method-assign]
    figures["looks"] = float(counted.get("looks", 0))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--wait", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp) / "redis") as redis:
        urls = {"sqlite": f"sqlite:///{tmp}/results.db", "redis": redis.url()}
        for kind, url in urls.items():
            app = Celeriac("bench", broker="memory://", backend=url)
            for approach in ("aget", "to_thread(get)"):
                runs = [measure(app, approach, options.n, options.wait) for _ in range(options.repeat)]
                line = ", ".join(f"{key} {statistics.median(r[key] for r in runs):.0f}" for key in runs[0])
                print(f"{kind:6} {approach:15} n={options.n}: {line}", flush=True)
            app.close()


if __name__ == "__main__":
    main()
