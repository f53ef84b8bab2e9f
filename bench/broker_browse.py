"""What the dashboard's broker calls cost on a big broker: Redis and SQLite.

Fills one queue with ``--ready`` ready messages (all ten priorities), ``--scheduled``
scheduled ones and as many retries, and ``--dead`` dead letters (a real task
envelope each), then times, median of ``--repeat`` calls each: ``stats()``, a page
of 50 of each listing at offset 0 and deep in the listing, ``paused()``,
``enqueue_now`` and ``requeue_dead`` of one page. The dashboard's budget is 300 ms
per page, every call of a page included, at 1,000,000 queued and 100,000 dead.

Run: ``.venv/bin/python bench/broker_browse.py [--ready 1000000] [--dead 100000]
[--only redis|sqlite]``. Redis is a private ``redis-server`` on a free port (as in
``redis_compare.py``), SQLite a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redis_compare import redis_server

from celeriac.brokers import Broker, OutgoingMessage, broker_from_url
from celeriac.message import build

QUEUE = "big"
BATCH = 10_000
PAGE = 50


def envelope(i: int, retries: int = 0) -> bytes:
    return build("tasks.add", f"task-{i}", [i, "x" * 20], {}, queue=QUEUE,
                 retries=retries).dumps()


def fill(broker: Broker, ready: int, scheduled: int, dead: int) -> None:
    later = time.time() + 86400
    for start in range(0, dead, BATCH):
        n = min(BATCH, dead - start)
        broker.publish([OutgoingMessage(QUEUE, envelope(start + i)) for i in range(n)])
        got = broker.fetch([QUEUE], n, consumer="filler", lease=600)
        broker.dead_letter(got, "filled by the benchmark")
    for start in range(0, scheduled, BATCH):
        n = min(BATCH, scheduled - start)
        broker.publish([OutgoingMessage(QUEUE, envelope(i), eta=later + i) for i in range(n)])
        broker.publish([OutgoingMessage(QUEUE, envelope(i, 1), eta=later + i) for i in range(n)])
    for start in range(0, ready, BATCH):
        n = min(BATCH, ready - start)
        broker.publish([OutgoingMessage(QUEUE, envelope(start + i), priority=(start + i) % 10)
                        for i in range(n)])


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(name: str, broker: Broker, options: argparse.Namespace) -> None:
    start = time.perf_counter()
    fill(broker, options.ready, options.scheduled, options.dead)
    print(f"{name}: filled in {time.perf_counter() - start:.0f} s; {broker.stats()[QUEUE]}")
    deep = {"ready": options.ready, "scheduled": options.scheduled,
            "retries": options.scheduled, "dead": options.dead}
    rows: list[tuple[str, float]] = [("stats()", timed(broker.stats, options.repeat)),
                                     ("paused()", timed(broker.paused, options.repeat))]
    for kind, size in deep.items():
        for offset in (0, max(size // 2 - PAGE, 0)):
            rows.append((f"browse {kind} offset {offset:,}", timed(
                lambda k=kind, o=offset: broker.browse(QUEUE, k, offset=o, limit=PAGE),
                options.repeat)))
    scheduled = [m.id for m in broker.browse(QUEUE, "scheduled", limit=PAGE).items]
    rows.append(("enqueue_now of a page", timed(lambda: broker.enqueue_now(QUEUE, scheduled), 1)))
    dead = [m.id for m in broker.browse(QUEUE, "dead", limit=PAGE).items]
    rows.append(("requeue_dead of a page", timed(lambda: broker.requeue_dead(QUEUE, dead), 1)))
    for label, ms in rows:
        print(f"  {label:<34} {ms:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ready", type=int, default=1_000_000)
    parser.add_argument("--scheduled", type=int, default=50_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["redis", "sqlite"])
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if options.only in (None, "sqlite"):
            broker = broker_from_url(f"sqlite:///{Path(tmp) / 'big.db'}")
            measure("sqlite", broker, options)
            broker.close()
        if options.only in (None, "redis"):
            with redis_server(Path(tmp)) as url:
                broker = broker_from_url(url)
                measure("redis", broker, options)
                broker.close()


if __name__ == "__main__":
    main()
