"""How long the dashboard's task search takes with 100,000 stored results.

Fills a Redis backend (a private loopback ``redis-server`` this script starts) and a
SQLite backend (a fresh file) with N results of ten task names, nine in ten SUCCESS and
one in ten FAILURE (``store_many`` in batches of 1,000), then times each kind of search
(``ResultBackend.search``: no filter, by state, by name, by name and state, a rare
state, a deep page, an id prefix) and ``task_detail``: the median and the slowest of
``--repeat`` calls, in milliseconds. The dashboard's budget for a whole page is 300 ms.

Run: ``.venv/bin/python bench/task_search.py [--results 100000] [--repeat 20]
[--backends redis,sqlite]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from result_store import redis_server

from celeriac.backends import ResultBackend, ResultRecord, backend_from_url


def fill(backend: ResultBackend, count: int) -> list[str]:
    ids = []
    for start in range(0, count, 1000):
        batch = []
        for i in range(start, min(start + 1000, count)):
            failed = i % 10 == 0
            record = ResultRecord(
                task_id=str(uuid.uuid4()), status="FAILURE" if failed else "SUCCESS",
                name=f"app.task{i % 10}", result=None if failed else i, date_done=time.time(),
                exc_type="ValueError" if failed else None, exc_message="boom" if failed else None,
                args=[i, "x" * 40], kwargs={}, queue="celery", worker="w1@host")
            batch.append(record)
            ids.append(record.task_id)
        backend.store_many(batch)
    return ids


def probes(backend: ResultBackend, ids: list[str]) -> dict[str, Callable[[], Any]]:
    """What the Tasks page asks, by label."""
    return {
        "all, first page": lambda: backend.search(limit=50),
        "state SUCCESS": lambda: backend.search(state="SUCCESS", limit=50),
        "name": lambda: backend.search(name="app.task3", limit=50),
        "name + state": lambda: backend.search(name="app.task0", state="FAILURE"),
        "rare state (none)": lambda: backend.search(name="app.task3", state="FAILURE"),
        "page at offset 5,000": lambda: backend.search(state="SUCCESS", offset=5000),
        "id prefix (8 chars)": lambda: backend.search(task_id_prefix=ids[500][:8]),
        "id prefix (1 char)": lambda: backend.search(task_id_prefix=ids[500][:1]),
        "task_detail": lambda: backend.task_detail(ids[777]),
    }


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backends", default="redis,sqlite")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="task-search-") as tmp, \
            redis_server(Path(tmp)) as redis_url:
        for kind in options.backends.split(","):
            url = redis_url if kind == "redis" else f"sqlite:///{Path(tmp) / 'results.db'}"
            backend = backend_from_url(url, expires=86400)
            started = time.perf_counter()
            ids = fill(backend, options.results)
            print(f"{kind}: {options.results:,} results stored in "
                  f"{time.perf_counter() - started:.1f}s")
            for label, probe in probes(backend, ids).items():
                median, worst = timed(probe, options.repeat)
                print(f"  {label:24} median {median:7.1f} ms   max {worst:7.1f} ms")
            backend.close()


if __name__ == "__main__":
    main()
